/** @module cli/output — what commands print: aligned tables, and a blocking stdout for long listings. */
import { writeSync } from "node:fs";

/** Rows as aligned columns, for people. */
export function table(rows: string[][]): string {
  const widths = columnWidths(rows);
  return rows.map((r) => tableRow(r, widths)).join("\n");
}

function columnWidths(rows: readonly string[][]): number[] {
  const widths: number[] = [];
  for (const r of rows) r.forEach((c, i) => (widths[i] = Math.max(widths[i] ?? 0, c.length)));
  return widths;
}

/** A time for a table cell: ISO 8601 to the second, "-" for none. */
export function isoTime(ms: number | null | undefined): string {
  return ms ? new Date(ms).toISOString().replace(/\.\d{3}Z$/, "Z") : "-";
}

/** The last cell is not padded: no trailing spaces. */
function tableRow(row: readonly string[], widths: readonly number[]): string {
  return row.map((c, i) => (i === row.length - 1 ? c : c.padEnd(widths[i] ?? 0))).join("  ");
}

/**
 * Buffered, blocking stdout (or another descriptor: stderr for the CLI's log lines). process.stdout.write queues in
 * memory whatever a slow reader (`| less`) has not taken yet, so a million-line listing would sit in RAM;
 * writeSync waits for the pipe instead. Bytes are written as they are (a stored message, `queue show --body`).
 */
export class StdoutWriter {
  private chunks: (string | Uint8Array)[] = [];
  private pending = 0;
  /** the reader went away (`| head`): the rest is dropped quietly, as mailq does */
  private gone = false;

  constructor(private fd = 1) {}

  write(text: string | Uint8Array): void {
    this.chunks.push(text);
    this.pending += text.length;
    if (this.pending >= 64 * 1024) this.flush();
  }

  line(text: string): void {
    this.write(text + "\n");
  }

  flush(): void {
    const buf = Buffer.concat(this.chunks.map((c) => (typeof c === "string" ? Buffer.from(c) : c)));
    this.chunks = [];
    this.pending = 0;
    for (let off = 0; off < buf.length && !this.gone; ) {
      try {
        off += writeSync(this.fd, buf, off);
      } catch (e) {
        const code = (e as NodeJS.ErrnoException).code;
        if (code === "EPIPE") this.gone = true;
        else if (code === "EAGAIN") Bun.sleepSync(1); // a non-blocking pipe that is full: wait for the reader
        else throw e;
      }
    }
  }
}

/**
 * Aligned columns without holding every row: widths come from the first SAMPLE rows, later rows reuse them
 * (a longer cell only pushes the rest of its own row to the right).
 */
export class StreamedTable {
  private static readonly SAMPLE = 1000;
  private sample: string[][];
  private widths: number[] | null = null;

  constructor(header: string[], private out: StdoutWriter) {
    this.sample = [header];
  }

  push(row: string[]): void {
    if (this.widths) this.write(row);
    else if (this.sample.push(row) > StreamedTable.SAMPLE) this.fixWidths();
  }

  end(): void {
    if (!this.widths) this.fixWidths();
  }

  private fixWidths(): void {
    this.widths = columnWidths(this.sample);
    for (const r of this.sample) this.write(r);
    this.sample = [];
  }

  private write(row: string[]): void {
    this.out.line(tableRow(row, this.widths!));
  }
}
