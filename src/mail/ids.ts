/** @module mail/ids — branded identifiers and their generators (time-ordered, URL-safe). */

declare const brand: unique symbol;
type Brand<T, B extends string> = T & { readonly [brand]: B };

/** A queued message; also the id the REST API and the SMTP 250 reply show. */
export type MessageId = Brand<string, "MessageId">;
/** One recipient of one message: the unit of delivery state. */
export type RecipientId = Brand<string, "RecipientId">;
export type UserId = Brand<number, "UserId">;
/** One SMTP transaction received at the bounce domain (its reply and log line name it; kept mail keeps it). */
export type InboundId = Brand<string, "InboundId">;

const ALPHABET = "0123456789abcdefghjkmnpqrstvwxyz"; // Crockford base32, lower case

const CODES = [...ALPHABET].map((c) => c.charCodeAt(0));

let lastTime = -1;
/** the random part of the last id, one base32 digit (0–31) a byte */
const lastRand = new Uint8Array(10);
/** `lastTime` as its 10 characters, made once per millisecond rather than once per id */
let timeChars = "";
let timeCharsOf = -1;

/**
 * 10 chars of millisecond time + 10 random chars: unguessable enough for ids, and sorted by creation even
 * within one millisecond (the random part of the previous id is incremented, as in monotonic ULIDs), so
 * "oldest first" listings never depend on chance.
 */
function ulid(now: number = Date.now()): string {
  if (now <= lastTime) incrementRandom();
  else {
    lastTime = now;
    crypto.getRandomValues(lastRand);
    for (let i = 0; i < 10; i++) lastRand[i]! &= 31;
  }
  if (timeCharsOf !== lastTime) {
    timeChars = messageIdsFrom(lastTime);
    timeCharsOf = lastTime;
  }
  const r = lastRand;
  // prettier-ignore
  return timeChars + String.fromCharCode(CODES[r[0]!]!, CODES[r[1]!]!, CODES[r[2]!]!, CODES[r[3]!]!, CODES[r[4]!]!,
    CODES[r[5]!]!, CODES[r[6]!]!, CODES[r[7]!]!, CODES[r[8]!]!, CODES[r[9]!]!);
}

function incrementRandom(): void {
  for (let i = lastRand.length - 1; i >= 0; i--) {
    if (lastRand[i]! < 31) {
      lastRand[i]!++;
      return;
    }
    lastRand[i] = 0;
  }
  lastTime++; // 32^10 ids in one millisecond: borrow the next one rather than repeat
}

export const newMessageId = (now?: number) => ulid(now) as MessageId;

/**
 * The least possible id of a message made at `time` or later: every message id made before `time` sorts below it
 * (the first ten characters are the time, fixed width), so "messages older than T" is a range over an index of ids.
 */
export function messageIdsFrom(time: number): string {
  let out = "";
  let t = Math.max(0, Math.floor(time));
  for (let i = 0; i < 10; i++) {
    out = ALPHABET[t % 32] + out;
    t = Math.floor(t / 32);
  }
  return out;
}
export const newRecipientId = (now?: number) => ("r" + ulid(now)) as RecipientId;
export const newInboundId = (now?: number) => ("i" + ulid(now)) as InboundId;

/** The 20 lower-case Crockford base32 characters after a recipient id's "r": its compact form (VERP tokens). */
export const RECIPIENT_ID_BODY = /^r([0-9abcdefghjkmnpqrstvwxyz]{20})$/;
/** A message id as newMessageId makes it: 20 lower-case Crockford base32 characters (tracking tokens carry it). */
export const MESSAGE_ID = /^[0-9abcdefghjkmnpqrstvwxyz]{20}$/;
