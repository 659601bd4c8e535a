/**
 * @module queue/pending — SQL that reads every pending recipient through the partial indexes that hold them: a
 * queued row is in `recipients_new`, a deferred one in `recipients_retry` (queue/schema.ts). There is no index of
 * both: each would cost every submission and every settle one more B-tree write, for reads that are rare (start-up,
 * the loop's idle wait, `queue list`) and cost one more index seek here.
 */

/** The pending states, each with the one partial index whose rows are exactly that state's. */
const PENDING = [
  { status: "queued", index: "recipients_new" },
  { status: "deferred", index: "recipients_retry" },
] as const;

/**
 * `select` once per pending state, joined with UNION ALL. `select` gets the FROM clause (the table through the
 * state's index) and the state's predicate (`inState`), which must be in the WHERE for the partial index to be usable.
 */
export function eachPending(select: (from: string, inState: string) => string): string {
  return PENDING.map(({ status, index }) => select(`recipients INDEXED BY ${index}`, `status = '${status}'`)).join("\nUNION ALL ");
}
