import { describe, expect, test } from "bun:test";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { buildDsn } from "./notify.ts";
import { MAX_INPUT_BYTES, parseReport, type ParsedReport } from "./parse.ts";

const FIXTURES = join(import.meta.dir, "../../test/fixtures/bounces");
const fixture = (file: string) => readFileSync(join(FIXTURES, file));

interface Row {
  file: string;
  recipient: string;
  hardSoft: "hard" | "soft" | "none";
  status: string;
  action: string;
  notes: string;
}

const rows: Row[] = readFileSync(join(FIXTURES, "manifest.tsv"), "utf8")
  .trimEnd()
  .split("\n")
  .slice(1)
  .map((line) => {
    const c = line.split("\t");
    return { file: c[0]!, recipient: c[1]!, hardSoft: c[2] as Row["hardSoft"], status: c[3]!, action: c[5]!, notes: c[9] ?? "" };
  });

const reports = new Map<string, Promise<ParsedReport>>();
const reportOf = (file: string) => {
  if (!reports.has(file)) reports.set(file, parseReport(fixture(file)));
  return reports.get(file)!;
};
const failed = (r: ParsedReport) => (r.kind === "bounce" ? r.recipients.filter((x) => x.action === "failed") : []);
const find = (r: ParsedReport, address: string) => r.recipients.find((x) => x.address.toLowerCase() === address.toLowerCase());

describe("every row of the corpus manifest is classified as the manifest says", () => {
  test("the manifest has its 56 rows over 42 files", () => {
    expect(rows).toHaveLength(56);
    expect(new Set(rows.map((r) => r.file)).size).toBe(42);
  });

  for (const row of rows) {
    const what = row.hardSoft === "none" ? "no bounce" : `a ${row.hardSoft} ${row.action === "delayed" ? "delay" : "bounce"}`;
    test(`${row.file}: ${row.recipient} is ${what}${row.status ? ` (${row.status})` : ""}`, async () => {
      const report = await reportOf(row.file);
      if (row.hardSoft === "none") {
        // a success report, a complaint, an auto-reply or ordinary mail: nobody failed
        if (row.recipient === "-" || row.recipient === "redacted") expect(report.kind).not.toBe("bounce");
        else expect(failed(report).map((x) => x.address)).not.toContain(row.recipient);
        return;
      }
      if (row.action === "delayed") {
        // a warning, not a final failure: never among the failed recipients; reported, when the report is a delay
        expect(failed(report).map((x) => x.address.toLowerCase())).not.toContain(row.recipient.toLowerCase());
        if (report.kind === "bounce") return; // a mixed report (rfc3464-35) lists its failed recipients only
        expect(report.kind).toBe("delay");
      } else {
        expect(report.kind).toBe("bounce");
      }
      const found = find(report, row.recipient);
      expect(found, `${row.recipient} in ${JSON.stringify(report.recipients.map((x) => x.address))}`).toBeDefined();
      expect(found!.class).toBe(row.hardSoft);
      if (row.status) expect(found!.status).toBe(row.status);
    });
  }

  test("no report names a failed recipient that the manifest does not (a bounce nested in the returned copy is not ours)", async () => {
    const extra: string[] = [];
    for (const file of new Set(rows.map((r) => r.file))) {
      const listed = new Set(rows.filter((r) => r.file === file).map((r) => r.recipient.toLowerCase()));
      for (const r of failed(await reportOf(file))) if (!listed.has(r.address.toLowerCase())) extra.push(`${file}: ${r.address}`);
    }
    expect(extra).toEqual([]);
  });
});

describe("what kind of message it is", () => {
  test.each([
    ["arf-01.eml", "complaint"],
    ["rfc3834-01.eml", "autoreply"],
    ["not-is-not-bounce-01.eml", "ordinary"],
    ["rfc3464-28.eml", "success"],
    ["rfc3464-07.eml", "delay"],
    ["lhost-gmail-06.eml", "delay"],
    ["rhost-google-02.eml", "bounce"], // says Auto-Submitted: auto-replied, but it is a DSN
  ])("%s is a %s", async (file, kind) => {
    expect((await reportOf(file)).kind).toBe(kind as ParsedReport["kind"]);
  });

  test("an ARF report is a complaint with its feedback type and no recipients", async () => {
    const report = await reportOf("arf-01.eml");
    expect(report.complaint?.feedbackType).toBe("abuse");
    expect(report.recipients).toEqual([]);
  });

  test("a success report lists its recipient as delivered, not a bounce", async () => {
    const report = await reportOf("rfc3464-28.eml");
    expect(report.recipients).toEqual([
      expect.objectContaining({ address: "kijitora@neko.example.jp", action: "delivered", status: "2.1.5", class: "not_bounce" }),
    ]);
  });

  test("a message from MAILER-DAEMON that names no recipient is unparsed, not ordinary", async () => {
    const raw = "From: MAILER-DAEMON@mx.example.net\nTo: a@example.org\nSubject: Undelivered Mail Returned to Sender\n\nSomething went wrong.\n";
    expect(await parseReport(Buffer.from(raw))).toEqual({ kind: "unparsed", recipients: [] });
  });

  test("ordinary mail that mentions 'user unknown' is not a bounce", async () => {
    const raw = "From: Alice <alice@example.org>\nTo: bob@example.net\nSubject: our list\n\nbob@example.net\nsaid: 550 5.1.1 user unknown\n";
    expect((await parseReport(Buffer.from(raw))).kind).toBe("ordinary");
  });
});

describe("the fields of each recipient", () => {
  test("the address is the Original-Recipient, the Final-Recipient is kept beside it", async () => {
    const [r] = (await reportOf("rfc3464-09.eml")).recipients;
    expect(r).toMatchObject({ address: "kijitora-nyaaaaaan@example.co.jp", finalRecipient: "kijitora-cat@mx4.gr3.example.jp", action: "delayed" });
  });

  test("a DSN recipient carries its status, reply code, one-line diagnostic and remote MTA", async () => {
    const report = await reportOf("rhost-google-02.eml");
    expect(report.reportingMta).toBe("mail.example.co.jp");
    const [r] = report.recipients;
    expect(r).toMatchObject({ address: "neko-nyaan@example.org", status: "5.1.1", code: 550, remoteMta: "aspmx.l.google.com", class: "hard" });
    expect(r!.diagnostic).toStartWith("550-5.1.1 The email account that you tried to reach does not exist. Please try");
    expect(r!.diagnostic).not.toContain("\n");
  });

  test("a sender refusal (5.1.0 'sender rejected') is soft: the recipient is not condemned", async () => {
    const [r] = (await reportOf("mac-rhost-cox-01.eml")).recipients;
    expect(r).toMatchObject({ address: "recipient55@cox.net", status: "5.1.0", class: "soft" });
  });

  test("a diagnostic is at most 1000 characters on one line", async () => {
    const [r] = (await reportOf("lhost-exchange2007-02.eml")).recipients;
    expect(r!.diagnostic.length).toBeLessThanOrEqual(1000);
    expect(r!.diagnostic).toStartWith("550 5.2.2 STOREDRV.Deliver: mailbox full.");
  });
});

describe("the DSNs outpost itself sends", () => {
  const original = Buffer.from("From: a@example.org\r\nTo: b@example.net\r\nSubject: hi\r\nMessage-ID: <m1@example.org>\r\n\r\nhi\r\n");
  const dsn = (action: "failed" | "delayed") => buildDsn({
    hostname: "outpost.test", queueId: "q1", envelopeFrom: "a@example.org", arrivalDate: 0, original, now: 1000, action,
    recipients: [
      { address: "gone@example.net", status: "5.1.1", code: 550, diagnostic: "550 5.1.1 <gone@example.net>: user unknown", mx: "mx.example.net", lastAttemptAt: 1000 },
      { address: "full@example.net", status: "5.2.2", code: 552, diagnostic: "552 5.2.2 mailbox full", lastAttemptAt: 1000 },
      { address: "late@example.net", status: "4.4.7", code: 0, diagnostic: "message expired after 5d in the queue", lastAttemptAt: 1000 },
    ],
  });

  test("read back as a bounce with each recipient's status, code and class, and the original's Message-ID", async () => {
    const report = await parseReport(dsn("failed"));
    expect(report).toMatchObject({ kind: "bounce", originalMessageId: "<m1@example.org>", reportingMta: "outpost.test" });
    expect(report.recipients.map((r) => [r.address, r.status, r.code, r.class])).toEqual([
      ["gone@example.net", "5.1.1", 550, "hard"],
      ["full@example.net", "5.2.2", 552, "soft"],
      ["late@example.net", "4.4.7", undefined, "soft"],
    ]);
  });

  test("a delay warning reads back as a delay, not a bounce", async () => {
    expect((await parseReport(dsn("delayed"))).kind).toBe("delay");
  });
});

describe("the returned message's Message-ID", () => {
  test.each([
    ["rfc3464-26.eml", "<ALSMTP02OCIIZS2TRqf0001e76b@example.net>"], // message/rfc822 (itself a bounce)
    ["lhost-postfix-45.eml", "<11DA6AA80A5481396A07708AE233289E@nekonyaan>"], // text/rfc822-headers
    ["lhost-qmail-17.eml", "<20240624090401.44656.qmail@nq.example.jp>"], // quoted after qmail's marker line
    ["lhost-office365-01.eml", "<FFFFFFFF.EEEEEEEE@example.ed.jp>"], // "Original message headers:"
    ["rfc3464-06.eml", "<0000000000.0000000@mail.example.com>"], // after inline DSN fields, no MIME parts
    ["rhost-google-02.eml", "<2018042233445.A95F8E533589@mail.example.co.jp>"], // a boundary mailparser cannot match
    ["mac-rhost-cox-01.eml", "<5119e0e9531a692224d1bd44ef560e62@pixel1.example.com>"], // bare-CR file
  ])("of %s is %s", async (file, id) => {
    expect((await reportOf(file)).originalMessageId).toBe(id);
  });

  test("is absent when the bounce returns no headers", async () => {
    expect((await reportOf("lhost-domino-01.eml")).originalMessageId).toBeUndefined();
  });
});

describe("line endings", () => {
  const endings: [string, (s: string) => string][] = [
    ["LF", (s) => s],
    ["CRLF", (s) => s.replace(/\n/g, "\r\n")],
    ["bare CR", (s) => s.replace(/\n/g, "\r")],
  ];
  for (const file of ["lhost-postfix-02.eml", "lhost-qmail-17.eml", "rfc3464-35.eml"]) {
    test(`${file} reads the same with LF, CRLF and bare-CR line endings`, async () => {
      const lf = fixture(file).toString("latin1").replace(/\r\n?/g, "\n");
      const results = await Promise.all(endings.map(([, to]) => parseReport(Buffer.from(to(lf), "latin1"))));
      expect(results[0]!.recipients.length).toBeGreaterThan(0);
      expect(results[1]).toEqual(results[0]!);
      expect(results[2]).toEqual(results[0]!);
    });
  }
});

describe("hostile input never throws and stays bounded", () => {
  /** deterministic, so a failure can be replayed */
  function prng(seed: number) {
    return () => {
      seed = (seed * 1103515245 + 12345) & 0x7fffffff;
      return seed / 0x7fffffff;
    };
  }
  const KINDS = ["bounce", "delay", "success", "complaint", "autoreply", "ordinary", "unparsed"];
  const files = [...new Set(rows.map((r) => r.file))].map((f) => fixture(f));

  function mutate(source: Buffer, rand: () => number): Buffer {
    const out = Buffer.from(source);
    const edits = 1 + Math.floor(rand() * 20);
    for (let i = 0; i < edits; i++) {
      const at = Math.floor(rand() * out.length);
      const op = rand();
      if (op < 0.6) out[at] = Math.floor(rand() * 256);
      else if (op < 0.8) out.copyWithin(at, Math.floor(rand() * out.length));
      else out.fill(out[at]!, at, Math.min(out.length, at + Math.floor(rand() * 200)));
    }
    const cut = rand() < 0.3 ? Math.floor(rand() * out.length) : out.length;
    return out.subarray(0, cut);
  }

  function check(report: ParsedReport) {
    expect(KINDS).toContain(report.kind);
    for (const r of report.recipients) {
      expect(r.address).toContain("@");
      expect(r.diagnostic.length).toBeLessThanOrEqual(1000);
      expect(r.diagnostic).not.toMatch(/[\r\n]/);
      expect(["hard", "soft", "throttle", "not_bounce"]).toContain(r.class);
    }
  }

  test("2,000 mutated corpus messages each parse to a well-formed report", async () => {
    const rand = prng(42);
    for (let i = 0; i < 2000; i++) check(await parseReport(mutate(files[i % files.length]!, rand)));
  }, 120_000);

  test("1,000 random byte strings and header-like soups each parse to a well-formed report", async () => {
    const rand = prng(7);
    const pieces = ["From: MAILER-DAEMON@x\n", "Content-Type: multipart/report; boundary=b\n", "--b\n", "\n", "Final-Recipient: rfc822; a@b.c\n",
      "Action: failed\n", "Status: 5.1.1\n", "<a@b.c>:\n", "550 5.1.1 user unknown\n", "Content-Type: message/rfc822\n", "=?utf-8?B?", "\r", "\t", "@"];
    for (let i = 0; i < 1000; i++) {
      const input = i % 2 === 0
        ? Buffer.from(Array.from({ length: Math.floor(rand() * 3000) }, () => Math.floor(rand() * 256)))
        : Buffer.from(Array.from({ length: Math.floor(rand() * 200) }, () => pieces[Math.floor(rand() * pieces.length)]).join(""));
      check(await parseReport(input));
    }
  }, 120_000);

  test("a message far over the size cap is read up to the cap", async () => {
    const head = fixture("lhost-qmail-17.eml").toString("latin1");
    const huge = Buffer.from(head + "x".repeat(MAX_INPUT_BYTES * 3), "latin1");
    const report = await parseReport(huge);
    expect(report.recipients.map((r) => r.address)).toEqual(["userunknown@libsisimai.net", "mailboxfull@libsisimai.net"]);
  });

  test("long lines, deep nesting and thousands of addresses parse to a well-formed report", async () => {
    const head = "From: MAILER-DAEMON@mx.example\nSubject: failure notice\n";
    const inputs = [
      head + "\n" + "a@b.c ".repeat(200_000),
      head + "\n" + `${"a".repeat(60)}@${"b.".repeat(100)}`.repeat(5_000),
      head + "\n" + Array.from({ length: 5_000 }, (_, i) => `<u${i}@example.net>:\n550 5.1.1 user unknown\n`).join(""),
      head + "Content-Type: multipart/mixed; boundary=b0\n\n" + Array.from({ length: 300 }, (_, i) => `--b${i}\nContent-Type: multipart/mixed; boundary=b${i + 1}\n\n`).join(""),
      "Content-Type: multipart/report; report-type=delivery-status\n\n" + "Final-Recipient: rfc822; a@b.c\n x\n".repeat(50_000),
    ];
    for (const input of inputs) check(await parseReport(Buffer.from(input)));
  }, 60_000);
});
