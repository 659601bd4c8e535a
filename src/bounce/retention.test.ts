import { expect, test } from "bun:test";
import { newInboundId } from "../mail/ids.ts";
import { silentLogger } from "../observe/log.ts";
import { storeEachTest } from "../../test/helpers/harness.ts";
import { InboundStore, type InboundKind } from "./inbound.ts";
import { startRetention } from "./retention.ts";

const DAY = 86_400_000;
const store = storeEachTest();

function keep(kept: InboundStore, receivedAt: number, kind: InboundKind = "postmaster") {
  const id = newInboundId(receivedAt);
  kept.keep({ id, receivedAt, kind, rcpt: "postmaster@b.test", mailFrom: "", clientIp: "192.0.2.1", size: 5, reason: "r", raw: Buffer.from("hello") });
  return id;
}

test("kept mail older than the retention is deleted at start and on every round; newer mail stays", async () => {
  let now = 100 * DAY;
  const kept = new InboundStore(store().sqlite);
  keep(kept, now - 31 * DAY);
  const recent = keep(kept, now - 29 * DAY);
  const service = startRetention({ sqlite: store().sqlite, retention: 30 * DAY, log: silentLogger, now: () => now });
  try {
    expect(kept.list().map((m) => m.id)).toEqual([recent]);
    now += 2 * DAY;
    expect(service.prune()).toBe(1);
    expect(kept.list()).toEqual([]);
  } finally {
    await service.stop();
  }
});
