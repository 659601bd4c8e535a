/**
 * @module api/send/multipart — reads a multipart/form-data body into [name, value] entries, in order, with
 * busboy. Not Bun's `formData()`: it drops each part's Content-Type, and an attachment needs its type.
 */
import busboy from "busboy";

export type FormEntry = [string, string | File];

/** busboy's type for a file part that named none, and what a client sends when it does not know. */
const UNKNOWN_TYPES = new Set(["application/octet-stream"]);

/**
 * The entries of `body`. A file part becomes a File with its name and type (no type when the part gave
 * none, so the composer can guess one from the name). Rejects on a malformed body.
 */
export function multipartEntries(contentType: string, body: Buffer): Promise<FormEntry[]> {
  return new Promise((resolve, reject) => {
    const entries: FormEntry[] = [];
    const files: Promise<void>[] = [];
    let parser: busboy.Busboy;
    try {
      // the request size is already bounded by the listener; busboy's 1 MB default would cut a `body` field
      parser = busboy({ headers: { "content-type": contentType }, defParamCharset: "utf8", limits: { fieldSize: body.length } });
    } catch (e) {
      return reject(e);
    }
    parser.on("field", (name, value) => entries.push([name, value]));
    parser.on("file", (name, stream, info) => {
      const slot = entries.push([name, ""]) - 1; // keeps the part's place among the others
      const chunks: Buffer[] = [];
      stream.on("data", (c: Buffer) => chunks.push(c));
      files.push(new Promise((done) => stream.on("end", () => {
        const type = partType(info.mimeType);
        entries[slot] = [name, new File(chunks, info.filename ?? "", type ? { type } : {})];
        done();
      })));
    });
    parser.on("error", reject);
    parser.on("close", () => Promise.all(files).then(() => resolve(entries), reject));
    parser.end(body);
  });
}

function partType(mimeType: string): string | undefined {
  const t = mimeType.trim().toLowerCase();
  return t === "" || UNKNOWN_TYPES.has(t) ? undefined : mimeType;
}
