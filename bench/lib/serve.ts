/** @module bench/lib/serve — the first-run API key of an `outpost serve` a bench started. */

/**
 * Reads serve's stderr (where it prints its first-run secrets; stdout is JSON log lines only) until the API key
 * shows, within `ms`. The rest of stderr then keeps being read, so serve never blocks on a full pipe: copied to
 * ours when `forward` (a fatal error shows), dropped otherwise.
 */
export async function firstRunKey(stderr: ReadableStream<Uint8Array>, opts: { ms: number; forward: boolean }): Promise<string> {
  const reader = stderr.getReader();
  let text = "";
  const until = Date.now() + opts.ms;
  while (Date.now() < until) {
    const { value, done } = await reader.read();
    if (done) break;
    text += new TextDecoder().decode(value);
    const m = /^api key: (\S+)$/m.exec(text);
    if (m) {
      void (async () => {
        for (let r = await reader.read(); !r.done; r = await reader.read()) if (opts.forward) process.stderr.write(r.value);
      })();
      return m[1]!;
    }
  }
  throw new Error(`no api key printed by outpost serve:\n${text}`);
}
