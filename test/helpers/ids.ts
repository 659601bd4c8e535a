/**
 * @module test/helpers/ids — a test clock that starts past every id made so far. Ids are monotonic in a process
 * (mail/ids.ts): after a test whose clock ran ahead, ids made at an earlier time carry that later time, so a test
 * that relies on an id's time (expiry by message age) must start its clock after them.
 */
import { newMessageId } from "../../src/mail/ids.ts";

const ALPHABET = "0123456789abcdefghjkmnpqrstvwxyz";

/** A time (ms) after the time of every message id made so far in this process, and not before now. */
export function pastEveryId(): number {
  const time = [...newMessageId().slice(0, 10)].reduce((t, c) => t * 32 + ALPHABET.indexOf(c), 0);
  return Math.max(Date.now(), time + 1);
}
