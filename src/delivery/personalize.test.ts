import { describe, expect, test } from "bun:test";
import { verpCodec } from "../bounce/verp.ts";
import { newMessageId, newRecipientId, type UserId } from "../mail/ids.ts";
import type { StoredMessage } from "../queue/claim.ts";
import { personalize } from "./personalize.ts";

const verp = verpCodec(Buffer.alloc(32, 1));
const keys = { verp, bounceDomain: "bounces.example.com" };
const recipients = [
  { id: newRecipientId(), address: "a@dest.test" },
  { id: newRecipientId(), address: "b@dest.test" },
];

function message(trackBounces: boolean, envelopeFrom = "app@example.com"): StoredMessage {
  return {
    id: newMessageId(), userId: 1 as UserId, envelopeFrom, body: Buffer.from("Subject: x\r\n\r\nhi\r\n"), createdAt: 0,
    options: { inlineCss: false, trackClicks: false, trackOpens: false, trackBounces, unsubscribe: false },
  };
}

describe("personalize", () => {
  test("with bounce tracking each recipient gets its own transaction and its own signed return path", () => {
    const out = personalize(message(true), recipients, keys);
    expect(out.map((o) => o.recipients.map((r) => r.address))).toEqual([["a@dest.test"], ["b@dest.test"]]);
    for (const [i, o] of out.entries()) {
      expect(verp.recipientFromVerp(o.envelopeFrom.slice(0, o.envelopeFrom.indexOf("@")))).toBe(recipients[i]!.id);
      expect(o.envelopeFrom).toEndWith("@bounces.example.com");
    }
  });

  test("without bounce tracking the recipients share one transaction with the stored sender", () => {
    const out = personalize(message(false), recipients, keys);
    expect(out).toHaveLength(1);
    expect(out[0]!.envelopeFrom).toBe("app@example.com");
    expect(out[0]!.recipients).toEqual(recipients);
  });

  test("the null sender stays <> (a DSN is never given a return path), and no bounce domain means no VERP", () => {
    expect(personalize(message(true, ""), recipients, keys).map((o) => o.envelopeFrom)).toEqual([""]);
    expect(personalize(message(true), recipients, { verp, bounceDomain: "" }).map((o) => o.envelopeFrom)).toEqual(["app@example.com"]);
  });
});
