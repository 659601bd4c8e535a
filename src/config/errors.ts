/** @module config/errors — the one error type for bad configuration; the CLI turns it into exit code 2. */

/** Names where the bad value came from: FILE (a path, "<defaults>" or "OUTPOST_LOG"), KEY (dotted) and the problem. */
export class ConfigError extends Error {
  override readonly name = "ConfigError";
  readonly file: string;
  /** dotted path such as `delivery.route[0].port`; "" when the problem is the whole file */
  readonly key: string;
  readonly problem: string;

  constructor(file: string, key: string, problem: string) {
    super(key === "" ? `${file}: ${problem}` : `${file}: ${key}: ${problem}`);
    this.file = file;
    this.key = key;
    this.problem = problem;
  }
}
