import { expect, test } from "bun:test";
import { checkRecipientDomain, IntakeError, type PolicyLimits } from "./policy.ts";

const limits: PolicyLimits = { maxMessageSize: 1000, maxRecipients: 10, maxHops: 50 };

test("a recipient at an address literal is refused 553 5.1.2 (400 naming recipient) unless address literals are allowed", () => {
  for (const a of ["admin@[10.0.0.1]", "root@[IPv6:fe80::1]", '"a b"@[127.0.0.1]']) {
    const err = (() => {
      try {
        checkRecipientDomain(a, limits);
      } catch (e) {
        return e;
      }
    })() as IntakeError;
    expect(err, a).toBeInstanceOf(IntakeError);
    expect([err.code, err.enhanced, err.httpStatus, err.field]).toEqual([553, "5.1.2", 400, "recipient"]);
    expect(() => checkRecipientDomain(a, { ...limits, allowAddressLiterals: true })).not.toThrow();
  }
  for (const a of ["user@example.com", '"[x]"@example.com', "user@xn--bcher-kva.example"]) expect(() => checkRecipientDomain(a, limits)).not.toThrow();
});
