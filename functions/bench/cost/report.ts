/** A goal of issue 7 or 8 against what this run measured. */
export interface Goal {
  readonly name: string;
  readonly measured: string;
  readonly goal: string;
  /** Undefined: a figure without a pass mark, or not measured in this run (`measured` is "-"). */
  readonly met: boolean | undefined;
  /** What the issue measured when it was filed, for comparison. */
  readonly filed: string;
}

/** What a section printed and the goals it measured. */
export interface Section {
  readonly lines: readonly string[];
  readonly goals: readonly Goal[];
}

export function median(values: readonly number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  if (sorted.length === 0) return Number.NaN;
  const middle = Math.floor(sorted.length / 2);
  return sorted.length % 2 === 1 ? (sorted[middle] ?? 0) : ((sorted[middle - 1] ?? 0) + (sorted[middle] ?? 0)) / 2;
}

/** `value` with `digits` decimals and thousands separators. */
export function fmt(value: number, digits = 0): string {
  return Number.isFinite(value) ? value.toLocaleString("en-US", { minimumFractionDigits: digits, maximumFractionDigits: digits }) : "n/a";
}

/** Columns two spaces apart, indented by two; the first column left-aligned, the others right-aligned. */
export function table(rows: readonly (readonly string[])[]): string[] {
  const widths = (rows[0] ?? []).map((_, column) => Math.max(...rows.map((row) => (row[column] ?? "").length)));
  return rows.map((row) => `  ${row.map((cell, column) => (column === 0 ? cell.padEnd(widths[column] ?? 0) : cell.padStart(widths[column] ?? 0))).join("  ")}`.trimEnd());
}

/** A section that could not run: what it would have measured, and why not. */
export function skippedSection(title: string, why: string, goals: readonly Omit<Goal, "measured" | "met">[]): Section {
  return { lines: [`${title}: skipped: ${why}`], goals: goals.map((goal) => ({ ...goal, measured: "-", met: undefined })) };
}

export function goalTable(goals: readonly Goal[]): string[] {
  return table([["goal", "measured", "target", "", "when filed"], ...goals.map((goal) => [goal.name, goal.measured, goal.goal, goal.met === undefined ? (goal.measured === "-" ? "skipped" : "") : goal.met ? "met" : "NOT MET", goal.filed])]);
}
