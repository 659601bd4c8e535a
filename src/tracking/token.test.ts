import { describe, expect, test } from "bun:test";
import { newMessageId, newRecipientId, type MessageId, type RecipientId } from "../mail/ids.ts";
import { MAX_TRACKED_URL, redirectTarget, trackingUrls, TrackingTokens } from "./token.ts";

const tokens = new TrackingTokens(Buffer.alloc(32, 1));
const other = new TrackingTokens(Buffer.alloc(32, 2));
const m = newMessageId();
const r = newRecipientId();
const URL_WITH_QUERY = "https://shop.example/item?id=7&ref=mail&x=%20y#top";

/** Every token of one recipient that must verify, with the verifier that accepts it. */
const kinds = {
  click: { make: (t: TrackingTokens) => t.click(m, r, 3, URL_WITH_QUERY), verify: (t: TrackingTokens, s: string) => t.verifyClick(s) },
  open: { make: (t: TrackingTokens) => t.open(m, r), verify: (t: TrackingTokens, s: string) => t.verifyOpen(s) },
  unsubscribe: { make: (t: TrackingTokens) => t.unsubscribe(m, r), verify: (t: TrackingTokens, s: string) => t.verifyUnsubscribe(s) },
};

/** A different character of the token alphabet at `i`. */
function alter(s: string, i: number): string {
  const c = s[i]!;
  const repl = c === "a" ? "b" : c === "0" ? "1" : c === "." ? "_" : "a";
  return s.slice(0, i) + repl + s.slice(i + 1);
}

describe("tracking tokens", () => {
  test("each kind names the message and recipient it was made for, and a click its link and URL", () => {
    expect(tokens.verifyClick(kinds.click.make(tokens))).toEqual({ messageId: m, recipientId: r, index: 3, url: URL_WITH_QUERY });
    expect(tokens.verifyOpen(tokens.open(m, r))).toEqual({ messageId: m, recipientId: r });
    expect(tokens.verifyUnsubscribe(tokens.unsubscribe(m, r))).toEqual({ messageId: m, recipientId: r });
  });

  test("tokens are URL-safe, and open and unsubscribe tokens are 62 characters", () => {
    for (const k of Object.values(kinds)) expect(k.make(tokens)).toMatch(/^[A-Za-z0-9._~-]+$/);
    expect(tokens.open(m, r)).toHaveLength(62);
    expect(tokens.unsubscribe(m, r)).toHaveLength(62);
  });

  test("a URL with non-ASCII characters comes back exactly as it was given", () => {
    const url = "https://bücher.example/straße?q=ä&b=1";
    expect(tokens.verifyClick(tokens.click(m, r, 0, url))?.url).toBe(url);
  });

  for (const [name, k] of Object.entries(kinds)) {
    test(`${name}: one character altered anywhere, or the token truncated or lengthened, verifies as nothing`, () => {
      const token = k.make(tokens);
      for (let i = 0; i < token.length; i++) expect(k.verify(tokens, alter(token, i))).toBeNull();
      for (let n = 0; n < token.length; n++) expect(k.verify(tokens, token.slice(0, n))).toBeNull();
      expect(k.verify(tokens, token + "A")).toBeNull();
      expect(k.verify(tokens, token + "\n")).toBeNull();
      expect(k.verify(tokens, token.toUpperCase())).toBeNull();
    });

    test(`${name}: a token made with another secret verifies as nothing`, () => {
      expect(k.verify(tokens, k.make(other))).toBeNull();
    });
  }

  test("a token of one kind is no token of another", () => {
    for (const [a, ka] of Object.entries(kinds)) {
      for (const [b, kb] of Object.entries(kinds)) if (a !== b) expect(kb.verify(tokens, ka.make(tokens))).toBeNull();
    }
  });

  test("a click token cannot be re-pointed: another URL, index, message or recipient with the old MAC fails", () => {
    const token = tokens.click(m, r, 3, "https://good.example/");
    const mac = token.slice(token.lastIndexOf(".") + 1);
    const evil = Buffer.from("https://evil.example/").toString("base64url");
    expect(tokens.verifyClick(`${m}${r.slice(1)}3.${evil}.${mac}`)).toBeNull();
    expect(tokens.verifyClick(token.replace(`${r.slice(1)}3.`, `${r.slice(1)}4.`))).toBeNull();
    const m2 = newMessageId();
    expect(tokens.verifyClick(m2 + token.slice(20))).toBeNull();
  });

  test("10,000 random tokens of the right shape never verify", () => {
    const b32 = "0123456789abcdefghjkmnpqrstvwxyz";
    const b64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    const pick = (alphabet: string, n: number) => Array.from(crypto.getRandomValues(new Uint8Array(n)), (x) => alphabet[x % alphabet.length]).join("");
    for (let i = 0; i < 10_000; i++) {
      const ids = pick(b32, 40);
      expect(tokens.verifyOpen(ids + pick(b64, 22))).toBeNull();
      expect(tokens.verifyUnsubscribe(ids + pick(b64, 22))).toBeNull();
      const url = Buffer.from(`https://x.example/${pick(b32, 8)}`).toString("base64url");
      expect(tokens.verifyClick(`${ids}${i % 50}.${url}.${pick(b64, 22)}`)).toBeNull();
    }
  });

  test("garbage never verifies and never throws", () => {
    for (const s of ["", ".", "..", "%00", "a".repeat(10_000), "../../etc/passwd", "\r\nLocation: https://evil.example", "😀".repeat(40)]) {
      expect(tokens.verifyClick(s)).toBeNull();
      expect(tokens.verifyOpen(s)).toBeNull();
      expect(tokens.verifyUnsubscribe(s)).toBeNull();
    }
  });

  test("a click token is refused for anything but an absolute http(s) URL", () => {
    for (const url of ["javascript:alert(1)", "data:text/html,<script>", "//evil.example/", "mailto:a@b.example", "http:evil.example", "https:/\\evil.example",
      "https://x.example/\r\nSet-Cookie: a=b", "https://x.example/\ttab", "https://", "ftp://x.example/", "https://x.example/" + "a".repeat(MAX_TRACKED_URL)]) {
      expect(() => tokens.click(m, r, 0, url)).toThrow(RangeError);
    }
    expect(() => tokens.click(m, r, -1, "https://x.example/")).toThrow(RangeError);
    expect(() => tokens.click(m, r, 1.5, "https://x.example/")).toThrow(RangeError);
  });

  test("ids that are not ours are a programming error", () => {
    expect(() => tokens.open("m1" as MessageId, r)).toThrow(TypeError);
    expect(() => tokens.open(m, "x" as RecipientId)).toThrow(TypeError);
  });
});

describe("redirectTarget", () => {
  test("keeps a printable ASCII URL exactly, & and %-escapes included", () => {
    expect(redirectTarget(URL_WITH_QUERY)).toBe(URL_WITH_QUERY);
    expect(redirectTarget("HTTPS://Example.COM")).toBe("HTTPS://Example.COM");
  });

  test("normalises a URL with spaces or non-ASCII characters into ASCII", () => {
    expect(redirectTarget("https://bücher.example/a b?q=ä")).toBe("https://xn--bcher-kva.example/a%20b?q=%C3%A4");
  });

  test("refuses what a browser would not take as an absolute http(s) URL", () => {
    for (const url of ["javascript:alert(1)", "JavaScript:alert(1)", "data:,x", "//evil.example", "/local", "http:evil.example", "http://", "https://a.example/\nb"]) {
      expect(redirectTarget(url)).toBeNull();
    }
  });
});

describe("trackingUrls", () => {
  test("builds the three links under public_url, and the click prefix", () => {
    const u = trackingUrls("https://mail.example.com/outpost/", tokens, m, r);
    expect(u.clickPrefix).toBe("https://mail.example.com/outpost/t/c/");
    expect(u.open).toBe(`https://mail.example.com/outpost/t/o/${tokens.open(m, r)}`);
    expect(u.unsubscribe).toBe(`https://mail.example.com/outpost/t/u/${tokens.unsubscribe(m, r)}`);
    const click = u.click(URL_WITH_QUERY, 2);
    expect(click.startsWith(u.clickPrefix)).toBe(true);
    expect(tokens.verifyClick(click.slice(u.clickPrefix.length))).toEqual({ messageId: m, recipientId: r, index: 2, url: URL_WITH_QUERY });
  });

  test("a link no click could redirect to is left as it is", () => {
    const u = trackingUrls("https://mail.example.com", tokens, m, r);
    for (const url of ["https://x.example/a\nb", `https://x.example/${"a".repeat(MAX_TRACKED_URL)}`, "javascript:alert(1)"]) expect(u.click(url, 0)).toBe(url);
  });

  test("refuses an empty public_url", () => {
    expect(() => trackingUrls("", tokens, m, r)).toThrow(/public_url/);
  });
});
