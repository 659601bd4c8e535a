import { describe, expect, test } from "bun:test";
import { newRecipientId, type RecipientId } from "../mail/ids.ts";
import { verpCodec } from "./verp.ts";

const secret = Buffer.alloc(32, 7);
const verp = verpCodec(secret);
const id = newRecipientId();

const localOf = (address: string) => address.slice(0, address.lastIndexOf("@"));

describe("VERP tokens", () => {
  test("a return path names its recipient row and fits a local part", () => {
    const address = verp.verpAddress(id, "bounces.example.com");
    expect(address).toMatch(/^b\+[0-9a-z]{36}@bounces\.example\.com$/);
    expect(Buffer.byteLength(localOf(address))).toBeLessThanOrEqual(64);
    expect(verp.recipientFromVerp(localOf(address))).toBe(id);
  });

  test("a return path issued by an earlier version still names its recipient (the key's derivation is fixed)", () => {
    expect(verp.verpAddress("r0123456789abcdefghjk" as RecipientId, "b.test")).toBe("b+0123456789abcdefghjkf10720w0wtyrh8q5@b.test");
  });

  test("a token survives an MTA that upper- or lower-cases the local part", () => {
    const local = localOf(verp.verpAddress(id, "b.test"));
    expect(verp.recipientFromVerp(local.toUpperCase())).toBe(id);
    expect(verp.recipientFromVerp(local.toLowerCase())).toBe(id);
  });

  test("a forged, altered, truncated or lengthened token names nobody", () => {
    const local = localOf(verp.verpAddress(id, "b.test"));
    const flip = (s: string, i: number) => s.slice(0, i) + (s[i] === "0" ? "1" : "0") + s.slice(i + 1);
    expect(verp.recipientFromVerp(flip(local, 5))).toBeNull(); // another recipient id, same MAC
    expect(verp.recipientFromVerp(flip(local, local.length - 1))).toBeNull(); // MAC altered
    expect(verp.recipientFromVerp(local.slice(0, -1))).toBeNull();
    expect(verp.recipientFromVerp(local + "0")).toBeNull();
    expect(verp.recipientFromVerp("b+" + "0".repeat(36))).toBeNull();
    expect(verp.recipientFromVerp("postmaster")).toBeNull();
    expect(verp.recipientFromVerp("")).toBeNull();
  });

  test("another instance's secret does not accept our tokens", () => {
    const local = localOf(verp.verpAddress(id, "b.test"));
    expect(verpCodec(Buffer.alloc(32, 8)).recipientFromVerp(local)).toBeNull();
  });

  test("tokens of different recipients differ in their signature too", () => {
    const other = newRecipientId();
    const a = localOf(verp.verpAddress(id, "b.test"));
    const b = localOf(verp.verpAddress(other, "b.test"));
    expect(a.slice(-16)).not.toBe(b.slice(-16));
    // the other's id with our MAC is refused
    expect(verp.recipientFromVerp(b.slice(0, -16) + a.slice(-16))).toBeNull();
  });

  test("something that is not a recipient id cannot be given a return path", () => {
    expect(() => verp.verpAddress("m123" as RecipientId, "b.test")).toThrow();
  });
});
