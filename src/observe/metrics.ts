/** @module observe/metrics — renders one metric family in the Prometheus text exposition format (0.0.4). */

/** A sample: its labels (none for a plain value) and value. */
export type Sample = [labels: Record<string, string> | null, value: number];

export function metric(name: string, type: "counter" | "gauge", help: string, samples: Sample[] | number): string[] {
  const list: Sample[] = typeof samples === "number" ? [[null, samples]] : samples;
  return [`# HELP ${name} ${help}`, `# TYPE ${name} ${type}`, ...list.map(([labels, v]) => `${name}${labelText(labels)} ${v}`)];
}

function labelText(labels: Record<string, string> | null): string {
  if (!labels) return "";
  return `{${Object.entries(labels).map(([k, v]) => `${k}="${escapeLabel(v)}"`).join(",")}}`;
}

function escapeLabel(v: string): string {
  return v.replace(/\\/g, "\\\\").replace(/"/g, '\\"').replace(/\n/g, "\\n");
}
