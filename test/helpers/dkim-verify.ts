/**
 * @module test/helpers/dkim-verify — checks DKIM signatures with two verifiers that share no code with our signer's
 * choices: mailauth's `dkimVerify` in process, and Debian's python3-dkim in a child process. DNS is a map of TXT
 * records (`selector._domainkey.domain` → record text), so nothing leaves the machine.
 */
import { spawnSync } from "node:child_process";
import { dkimVerify } from "mailauth";

export type TxtRecords = Record<string, string>;

/** The result of each DKIM-Signature, top first, as `selector._domainkey.domain: pass|fail|…`. */
export async function mailauthResults(message: Buffer, records: TxtRecords): Promise<string[]> {
  const resolver = async (name: string, type: string) => {
    const record = type === "TXT" ? records[name.replace(/\.$/, "").toLowerCase()] : undefined;
    if (record === undefined) throw Object.assign(new Error(`no ${type} record for ${name}`), { code: "ENOTFOUND" });
    return [[record]];
  };
  const { results } = await dkimVerify(message, { resolver });
  return results.map((r) => `${r.selector}._domainkey.${r.signingDomain}: ${r.status.result}`);
}

/** Whether each DKIM-Signature (top first) verifies with mailauth; a failure may be "fail" or "neutral" (body hash). */
export async function mailauthPasses(message: Buffer, records: TxtRecords): Promise<boolean[]> {
  return (await mailauthResults(message, records)).map((r) => r.endsWith(": pass"));
}

// Debian's python3-dkim is installed for /usr/bin/python3; a python3 earlier on PATH (pyenv) may lack it
const PYTHONS = ["/usr/bin/python3", "python3"];

/** A python3 that can `import dkim` (and nacl, for Ed25519), or null when python3-dkim is not installed. */
export function pythonWithDkim(): string | null {
  for (const python of PYTHONS) {
    const p = spawnSync(python, ["-c", "import dkim, nacl"], { stdio: "ignore" });
    if (p.status === 0) return python;
  }
  return null;
}

const VERIFY_PY = `
import dkim, json, sys
records = json.loads(sys.argv[1])
def dnsfunc(name, timeout=5):
    txt = records.get(name.decode().rstrip(".").lower())
    return txt.encode() if txt is not None else None
message = sys.stdin.buffer.read()
d = dkim.DKIM(message)
count = sum(1 for k, _ in d.headers if k.lower() == b"dkim-signature")
out = []
for i in range(count):
    try:
        out.append(bool(d.verify(idx=i, dnsfunc=dnsfunc)))
    except dkim.DKIMException as e:
        out.append(False)
print(json.dumps(out))
`;

/** Whether each DKIM-Signature (top first) verifies with python3-dkim. */
export function pythonResults(python: string, message: Buffer, records: TxtRecords): boolean[] {
  const p = spawnSync(python, ["-c", VERIFY_PY, JSON.stringify(records)], { input: message, timeout: 20_000 });
  if (p.status !== 0) throw new Error(`python3-dkim failed: ${p.stderr.toString()}`);
  return JSON.parse(p.stdout.toString()) as boolean[];
}
