import { beforeAll, describe, expect, test } from "bun:test";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { mailauthResults, type TxtRecords } from "../../test/helpers/dkim-verify.ts";
import { verpCodec } from "../bounce/verp.ts";
import { generateDkimKey } from "../dkim/generate.ts";
import { parsePrivateKey } from "../dkim/keys.ts";
import { DkimSigner } from "../dkim/sign.ts";
import { newMessageId, newRecipientId, type UserId } from "../mail/ids.ts";
import { createLogger } from "../observe/log.ts";
import { Metrics } from "../observe/metrics.ts";
import type { StoredMessage } from "../queue/claim.ts";
import type { MessageOptions } from "../queue/enqueue.ts";
import { TrackingTokens } from "../tracking/token.ts";
import { Personalizer, skipReason, type PersonalizeKeys } from "./personalize.ts";

const verp = verpCodec(Buffer.alloc(32, 1));
const tokens = new TrackingTokens(Buffer.alloc(32, 2));
const PUBLIC = "https://mail.example.net";
const records: TxtRecords = {};
let signer: DkimSigner;
const unsigned = new DkimSigner([]);

beforeAll(() => {
  const key = generateDkimKey("rsa");
  records["s1._domainkey.example.com"] = key.record;
  signer = new DkimSigner([{ domain: "example.com", selector: "s1", ...parsePrivateKey(key.privatePem) }]);
});

const recipients = [
  { id: newRecipientId(), address: "a@dest.test" },
  { id: newRecipientId(), address: "b@dest.test" },
];

const HTML_MESSAGE = Buffer.from(
  "From: App <app@example.com>\r\nTo: list@dest.test\r\nSubject: News\r\nMIME-Version: 1.0\r\n" +
    "Content-Type: text/html; charset=utf-8\r\n\r\n" +
    '<html><body><p><a href="https://shop.example/item?a=1&amp;b=2">Buy</a></p></body></html>\r\n',
);
const MALFORMED = readFileSync(join(import.meta.dir, "../../test/fixtures/html/malformed/missing-closing-boundary.eml"));

const NONE: MessageOptions = { inlineCss: false, trackClicks: false, trackOpens: false, trackBounces: false, unsubscribe: false };

function message(options: Partial<MessageOptions> = {}, body = HTML_MESSAGE, envelopeFrom = "app@example.com"): StoredMessage {
  return { id: newMessageId(), userId: 1 as UserId, envelopeFrom, body: Buffer.from(body), createdAt: 0, options: { ...NONE, ...options } };
}

function setup(keys: Partial<PersonalizeKeys> = {}) {
  const lines: Record<string, unknown>[] = [];
  const log = createLogger("debug", (l) => lines.push(JSON.parse(l) as Record<string, unknown>));
  const metrics = new Metrics();
  const p = new Personalizer({ verp, bounceDomain: "bounces.example.com", tokens, publicUrl: PUBLIC, signer: unsigned, ...keys }, log, metrics);
  return { p, lines, skipped: () => lines.filter((l) => l.event === "personalize_skipped"), metrics: () => metrics.render() };
}

const addresses = (out: { recipients: { address: string }[] }[]) => out.map((o) => o.recipients.map((r) => r.address));

describe("personalize: transactions", () => {
  test("with bounce tracking each recipient gets its own transaction and its own signed return path", async () => {
    const out = await setup().p.outbound(message({ trackBounces: true }), recipients);
    expect(addresses(out)).toEqual([["a@dest.test"], ["b@dest.test"]]);
    for (const [i, o] of out.entries()) {
      expect(verp.recipientFromVerp(o.envelopeFrom.slice(0, o.envelopeFrom.indexOf("@")))).toBe(recipients[i]!.id);
      expect(o.envelopeFrom).toEndWith("@bounces.example.com");
    }
  });

  test("without per-recipient changes the recipients share one transaction with the stored sender and bytes", async () => {
    const m = message();
    const out = await setup().p.outbound(m, recipients);
    expect(out).toHaveLength(1);
    expect(out[0]!.envelopeFrom).toBe("app@example.com");
    expect(out[0]!.recipients).toEqual(recipients);
    expect(out[0]!.body.equals(m.body)).toBe(true);
  });

  test("the null sender stays <> (a DSN is never given a return path), and no bounce domain means no VERP", async () => {
    expect((await setup().p.outbound(message({ trackBounces: true }, HTML_MESSAGE, ""), recipients)).map((o) => o.envelopeFrom)).toEqual([""]);
    const noDomain = await setup({ bounceDomain: "" }).p.outbound(message({ trackBounces: true }), recipients);
    expect(noDomain.map((o) => o.envelopeFrom)).toEqual(["app@example.com"]);
  });

  test("tracked recipients get their own copies: their own click link, pixel and List-Unsubscribe", async () => {
    const m = message({ trackClicks: true, trackOpens: true, unsubscribe: true });
    const out = await setup().p.outbound(m, recipients);
    expect(addresses(out)).toEqual([["a@dest.test"], ["b@dest.test"]]);
    for (const [i, o] of out.entries()) {
      const text = o.body.toString();
      const click = /href="(https:\/\/mail\.example\.net\/t\/c\/[^"]+)"/.exec(text)![1]!;
      expect(tokens.verifyClick(click.slice(click.lastIndexOf("/") + 1))).toMatchObject({
        messageId: m.id, recipientId: recipients[i]!.id, index: 0, url: "https://shop.example/item?a=1&b=2",
      });
      const open = /src="https:\/\/mail\.example\.net\/t\/o\/([^"]+)"/.exec(text)![1]!;
      expect(tokens.verifyOpen(open)).toEqual({ messageId: m.id, recipientId: recipients[i]!.id });
      const unsub = /^List-Unsubscribe: <https:\/\/mail\.example\.net\/t\/u\/([^>]+)>\r$/m.exec(text)![1]!;
      expect(tokens.verifyUnsubscribe(unsub)).toEqual({ messageId: m.id, recipientId: recipients[i]!.id });
      expect(text).toContain("\r\nList-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n");
    }
  });

  test("tracking a message without HTML changes nothing, so its recipients still share one transaction", async () => {
    const text = Buffer.from("From: app@example.com\r\nSubject: x\r\nContent-Type: text/plain\r\n\r\nhttps://shop.example/\r\n");
    const out = await setup().p.outbound(message({ trackClicks: true, trackOpens: true }, text), recipients);
    expect(addresses(out)).toEqual([["a@dest.test", "b@dest.test"]]);
  });
});

describe("personalize: DKIM, last", () => {
  test("each tracked copy is signed after its links and List-Unsubscribe were added, and verifies", async () => {
    const { p, metrics } = setup({ signer });
    const out = await p.outbound(message({ trackClicks: true, trackOpens: true, unsubscribe: true }), recipients);
    expect(out).toHaveLength(2);
    for (const o of out) {
      expect(o.body.toString()).toStartWith("DKIM-Signature:");
      expect(await mailauthResults(o.body, records)).toEqual(["s1._domainkey.example.com: pass"]);
    }
    expect(await metrics()).toContain('outpost_dkim_signatures_total{algorithm="rsa-sha256"} 2');
  });

  test("untracked recipients sharing a transaction get one signature; VERP copies of the same bytes reuse it", async () => {
    const { p, metrics } = setup({ signer });
    const shared = await p.outbound(message(), recipients);
    expect(shared).toHaveLength(1);
    expect(await mailauthResults(shared[0]!.body, records)).toEqual(["s1._domainkey.example.com: pass"]);
    const verped = await p.outbound(message({ trackBounces: true }), recipients);
    expect(verped).toHaveLength(2);
    expect(verped[0]!.body).toBe(verped[1]!.body);
    expect(await mailauthResults(verped[1]!.body, records)).toEqual(["s1._domainkey.example.com: pass"]);
    expect(await metrics()).toContain('outpost_dkim_signatures_total{algorithm="rsa-sha256"} 2');
  });

  test("a message's later jobs (other destinations) reuse its shared signature", async () => {
    const { p, metrics } = setup({ signer });
    const m = message();
    await p.outbound(m, recipients.slice(0, 1));
    // loaded again from the store for the next job: another Buffer with the same bytes
    await p.outbound({ ...m, body: Buffer.from(m.body) }, recipients.slice(1));
    expect(await metrics()).toContain('outpost_dkim_signatures_total{algorithm="rsa-sha256"} 1');
  });
});

describe("personalize: what cannot be rewritten", () => {
  test("malformed MIME goes out with its HTML as stored, List-Unsubscribe added and signed; one log line, counted per copy", async () => {
    const { p, skipped, metrics } = setup({ signer });
    const m = message({ trackClicks: true, trackOpens: true, unsubscribe: true }, Buffer.from(MALFORMED.toString().replace(/^From: .*$/m, "From: app@example.com")));
    const out = await p.outbound(m, recipients);
    expect(out).toHaveLength(2);
    for (const o of out) {
      const text = o.body.toString("latin1");
      expect(text).not.toContain("/t/c/");
      expect(text).not.toContain("/t/o/");
      expect(text).toContain("List-Unsubscribe: <https://mail.example.net/t/u/");
      expect(text.slice(text.indexOf("\r\n\r\n"))).toBe(m.body.toString("latin1").slice(m.body.indexOf("\r\n\r\n")));
      expect(await mailauthResults(o.body, records)).toEqual(["s1._domainkey.example.com: pass"]);
    }
    expect(skipped()).toHaveLength(1);
    expect(skipped()[0]).toMatchObject({ queue_id: m.id, recipients: 2 });
    expect(String(skipped()[0]!.reason)).toContain("without its closing boundary");
    expect(await metrics()).toContain('outpost_personalize_skipped_total{reason="unclosed_multipart"} 2');
  });

  test("without a public URL (a restart emptied http.public_url) the copies go out untracked, logged", async () => {
    const { p, skipped, metrics } = setup({ publicUrl: "" });
    const out = await p.outbound(message({ trackClicks: true, unsubscribe: true }), recipients);
    expect(addresses(out)).toEqual([["a@dest.test", "b@dest.test"]]);
    expect(skipped()[0]).toMatchObject({ recipients: 2 });
    expect(await metrics()).toContain('outpost_personalize_skipped_total{reason="no_public_url"} 2');
  });

  test("a signer that fails rejects (the scheduler defers), and the failure is not remembered", async () => {
    let calls = 0;
    const failing = { enabled: true, sign: async () => (calls++, Promise.reject(new Error("boom"))) } as unknown as DkimSigner;
    const { p, metrics } = setup({ signer: failing });
    const m = message();
    await expect(p.outbound(m, recipients)).rejects.toThrow("boom");
    await expect(p.outbound(m, recipients)).rejects.toThrow("boom");
    expect(calls).toBe(2);
  });

  test("skip reasons are a few kinds, whatever the words", () => {
    expect(skipReason('HTML part 2: charset "x-klingon" is not supported')).toBe("unsupported_charset");
    expect(skipReason("multipart/mixed without a usable boundary")).toBe("no_boundary");
    expect(skipReason("unreadable MIME: Too many parts")).toBe("unreadable_mime");
    expect(skipReason("something new")).toBe("other");
  });
});

describe("personalize: the bodies it remembers (32 MiB, least recently used go first)", () => {
  const one = [{ id: newRecipientId(), address: "a@dest.test" }];
  /** A 4 KiB message whose bytes depend only on `n`: the same n gives equal bytes in a new Buffer. */
  function sized(n: number): Buffer {
    const head = Buffer.from(`From: app@example.com\r\nSubject: ${n}\r\n\r\n`);
    return Buffer.concat([head, Buffer.alloc(4096 - head.length, 0x61)]);
  }
  // tracked: its compiled HTML is cached on its Buffer, so keeping the Buffer pays (an untracked, unsigned one is not kept)
  const job = (id: StoredMessage["id"], body: Buffer): StoredMessage => ({ ...message({ trackOpens: true }), id, body });
  /** Is the body this job goes out with the Buffer of an earlier job (remembered), not the one passed now? */
  async function remembered(p: Personalizer, m: StoredMessage): Promise<boolean> {
    const [out] = await p.outbound(m, one);
    return out!.body !== m.body;
  }

  test("only a tracked or signed message's body is kept: an untracked, unsigned one is left to the GC after its job", async () => {
    /** How many of 20 messages' bodies outlive their jobs (a conservative stack scan may keep one or two). */
    async function survivors(options: Partial<MessageOptions>, keys: Partial<PersonalizeKeys>): Promise<number> {
      const { p } = setup(keys);
      const refs: WeakRef<Buffer>[] = [];
      for (let n = 0; n < 20; n++) {
        const m = { ...message(options), body: sized(n) };
        refs.push(new WeakRef(m.body));
        await p.outbound(m, one);
      }
      await Bun.sleep(0);
      Bun.gc(true);
      return refs.filter((r) => r.deref() !== undefined).length;
    }
    expect(await survivors({}, {})).toBeLessThanOrEqual(2);
    expect(await survivors({ trackOpens: true }, { publicUrl: "" })).toBeLessThanOrEqual(2);
    expect(await survivors({ trackOpens: true }, {})).toBe(20);
    expect(await survivors({}, { signer })).toBe(20);
  });

  test("a message seen again with equal bytes goes out as the very Buffer first seen, for every recipient", async () => {
    const { p } = setup();
    const first = job(newMessageId(), sized(1));
    const [a] = await p.outbound(first, recipients);
    const again = job(first.id, sized(1));
    const out = await p.outbound(again, recipients);
    expect(a!.body).toBe(first.body);
    expect(out).toHaveLength(1);
    expect(out[0]!.recipients).toHaveLength(2);
    expect(out[0]!.body).toBe(first.body);
    // other bytes under the same id are not mistaken for the remembered ones
    const changed = job(first.id, sized(2));
    expect((await p.outbound(changed, one))[0]!.body).toBe(changed.body);
  });

  test("after 20,000 messages of 4 KiB it remembers exactly the newest 32 MiB of them", async () => {
    const { p } = setup();
    const ids = Array.from({ length: 20_000 }, () => newMessageId());
    for (const [n, id] of ids.entries()) await p.outbound(job(id, sized(n)), one);
    // newest first: each hit only moves that id to the front, so nothing is evicted until the first miss
    let kept = 0;
    for (let n = ids.length - 1; n >= 0 && (await remembered(p, job(ids[n]!, sized(n)))); n--) kept++;
    expect(kept).toBe((32 * 1024 * 1024) / 4096);
  });

  test("a message used again recently survives; the least recently used one is evicted", async () => {
    const { p } = setup();
    const full = (32 * 1024 * 1024) / 4096;
    const ids = Array.from({ length: full + 1 }, () => newMessageId());
    for (let n = 0; n < full; n++) await p.outbound(job(ids[n]!, sized(n)), one);
    expect(await remembered(p, job(ids[0]!, sized(0)))).toBe(true); // the oldest, used again
    await p.outbound(job(ids[full]!, sized(full)), one); // one over the bound: one must go
    expect(await remembered(p, job(ids[0]!, sized(0)))).toBe(true);
    expect(await remembered(p, job(ids[1]!, sized(1)))).toBe(false);
    expect(await remembered(p, job(ids[full]!, sized(full)))).toBe(true);
  });

  test("the same 3 messages used 1,000,000 times leave its memory where it was (the use queue is compacted)", async () => {
    const { p } = setup();
    const jobs = [0, 1, 2].map((n) => job(newMessageId(), sized(n)));
    for (const j of jobs) await p.outbound(j, one);
    Bun.gc(true);
    const before = process.memoryUsage().heapUsed;
    // no recipients: each use is only the remembering, not a tracked copy
    for (let i = 0; i < 1_000_000; i++) await p.outbound(jobs[i % 3]!, []);
    Bun.gc(true);
    const grown = process.memoryUsage().heapUsed - before;
    // an uncompacted queue keeps one entry per use: 1,000,000 entries are tens of MiB
    expect(grown).toBeLessThan(8 * 1024 * 1024);
    for (const [n, j] of jobs.entries()) expect(await remembered(p, job(j.id, sized(n)))).toBe(true);
  }, 60_000);
});
