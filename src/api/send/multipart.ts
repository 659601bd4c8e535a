/**
 * @module api/send/multipart — reads a multipart/form-data body into [name, value] entries, in order, with
 * busboy. Not Bun's `formData()`: it drops each part's Content-Type, and an attachment needs its type.
 */
import busboy from "busboy";

export type FormEntry = [string, string | File];

/**
 * "application/octet-stream" is what clients send when they do not know the type, and busboy reports
 * "text/plain" for a part that names none (Python's requests sends file parts so) as well as for one that says
 * text/plain. For octet-stream, and for text/plain on a file whose extension says otherwise ("report.pdf"),
 * the composer guesses from the file name; "notes" or "a.txt" stay text/plain.
 */
function saysNothing(type: string, filename: string): boolean {
  if (type === "" || type === "application/octet-stream") return true;
  return type === "text/plain" && /\.[A-Za-z0-9]+$/.test(filename) && !/\.(?:txt|text)$/i.test(filename);
}

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
      parser = busboy({
        headers: { "content-type": contentType },
        defParamCharset: "utf8",
        limits: { fieldSize: body.length },
      });
    } catch (e) {
      return reject(e);
    }
    parser.on("field", (name, value) => entries.push([name, value]));
    parser.on("file", (name, stream, info) => {
      const slot = entries.push([name, ""]) - 1; // keeps the part's place among the others
      const chunks: Buffer[] = [];
      stream.on("data", (c: Buffer) => chunks.push(c));
      const read = new Promise<void>((done, fail) => {
        // a body cut off inside a file part errors this stream: without a listener that would be uncaught
        stream.once("error", fail);
        stream.on("end", () => {
          entries[slot] = [name, partValue(chunks, info)];
          done();
        });
      });
      read.catch(() => {}); // the parser's own error rejects the request; this one must not go unhandled
      files.push(read);
    });
    parser.on("error", reject);
    parser.on("close", () => Promise.all(files).then(() => resolve(entries), reject));
    parser.end(body);
  });
}

/**
 * A part with a file name is a File; busboy also hands over a part without one as a file when its type is
 * application/octet-stream, but that is a plain field (a `to` so labelled must not be "a file").
 */
function partValue(chunks: Buffer[], info: busboy.FileInfo): string | File {
  if (info.filename === undefined) return Buffer.concat(chunks).toString("utf8");
  const type = info.mimeType.trim();
  return new File(chunks, info.filename, saysNothing(type.toLowerCase(), info.filename) ? {} : { type });
}
