// SQL migrations are imported as text so the compiled binary carries them (see db/migrations.ts).
declare module "*.sql" {
  const text: string;
  export default text;
}

// libqp ships no types; the three functions message/transfer.ts uses
declare module "libqp" {
  const libqp: {
    encode(buffer: Buffer | string): string;
    decode(str: Buffer | string): Buffer;
    wrap(str: string, lineLength?: number): string;
  };
  export default libqp;
}

// juice's browser build: the same inliner without web-resource-inliner, so nothing can fetch a stylesheet
declare module "juice/client" {
  import juice from "juice";
  export default juice;
}
