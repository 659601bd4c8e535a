/** @module mail/ids — branded identifiers and their generators (time-ordered, URL-safe). */

declare const brand: unique symbol;
type Brand<T, B extends string> = T & { readonly [brand]: B };

/** A queued message; also the id the REST API and the SMTP 250 reply show. */
export type MessageId = Brand<string, "MessageId">;
/** One recipient of one message: the unit of delivery state. */
export type RecipientId = Brand<string, "RecipientId">;
export type UserId = Brand<number, "UserId">;

const ALPHABET = "0123456789abcdefghjkmnpqrstvwxyz"; // Crockford base32, lower case

/** 10 chars of millisecond time + 10 random chars: sorts by creation, unguessable enough for ids. */
function ulid(now: number = Date.now()): string {
  let time = "";
  let t = now;
  for (let i = 0; i < 10; i++) {
    time = ALPHABET[t % 32] + time;
    t = Math.floor(t / 32);
  }
  const bytes = crypto.getRandomValues(new Uint8Array(10));
  let rand = "";
  for (const b of bytes) rand += ALPHABET[b % 32];
  return time + rand;
}

export const newMessageId = (now?: number) => ulid(now) as MessageId;
export const newRecipientId = (now?: number) => ("r" + ulid(now)) as RecipientId;
