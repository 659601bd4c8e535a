/**
 * @module test/smtp/recipes — the smart-host recipes of docs/smtp.md, as written there: the fenced block after
 * each `<!-- recipe: NAME -->` line, with only its placeholders replaced. Tests run exactly these lines, so the
 * documentation cannot drift from what is tested.
 */
import { readFileSync } from "node:fs";
import { join } from "node:path";

const DOC = join(import.meta.dir, "../../docs/smtp.md");

/** The placeholders the recipes use, each replaced by a test's own value. */
export interface RecipeValues {
  /** outpost's name (`outpost.example`) */
  host?: string;
  /** outpost's submission port (`587`) */
  port?: number;
  /** the login (`app-server`) and its password (`app-server-password`) */
  user?: string;
  password?: string;
  /** the envelope sender (`app@example.org`) */
  sender?: string;
  /** file paths as written → the test's own */
  paths?: Record<string, string>;
}

/** The text of the block marked `recipe: name`, every line as written (throws when there is none). */
export function recipeText(name: string): string {
  const doc = readFileSync(DOC, "utf8");
  const marker = `<!-- recipe: ${name} -->\n`;
  const at = doc.indexOf(marker);
  if (at < 0) throw new Error(`docs/smtp.md has no block marked "recipe: ${name}"`);
  const m = /^```[a-z]*\n([\s\S]*?)^```$/m.exec(doc.slice(at + marker.length));
  if (!m || m.index !== 0) throw new Error(`the "recipe: ${name}" marker in docs/smtp.md is not followed by a fenced block`);
  return m[1]!;
}

/**
 * The recipe with its placeholders replaced. Each placeholder given must occur in it, so a recipe changed in the
 * docs fails here rather than run half-substituted. The password is replaced before the login it starts with.
 */
export function recipe(name: string, values: RecipeValues): string {
  const pairs: Array<[string, string]> = [
    ...Object.entries(values.paths ?? {}),
    ...(values.password !== undefined ? [["app-server-password", values.password] as [string, string]] : []),
    ...(values.user !== undefined ? [["app-server", values.user] as [string, string]] : []),
    ...(values.sender !== undefined ? [["app@example.org", values.sender] as [string, string]] : []),
    ...(values.host !== undefined ? [["outpost.example", values.host] as [string, string]] : []),
  ];
  let text = recipeText(name);
  for (const [from, to] of pairs) {
    if (!text.includes(from)) throw new Error(`recipe "${name}" no longer contains ${JSON.stringify(from)}`);
    text = text.replaceAll(from, to);
  }
  if (values.port !== undefined) {
    if (!/\b587\b/.test(text)) throw new Error(`recipe "${name}" no longer names port 587`);
    text = text.replace(/\b587\b/g, String(values.port));
  }
  return text;
}

/** A recipe's non-empty lines, for configuration files that take one setting per line. */
export function recipeLines(name: string, values: RecipeValues): string[] {
  return recipe(name, values).split("\n").filter((l) => l.trim() !== "");
}
