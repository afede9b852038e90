/** How the benches reduce samples to a figure and print figures. */

/** The middle value (the mean of the two middle ones for an even count); NaN for none. */
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

/**
 * Columns two spaces apart, indented by two, right-aligned; the first column left-aligned, as a
 * column of names, unless `firstColumn` is "right" (a column of numbers).
 */
export function table(rows: readonly (readonly string[])[], firstColumn: "left" | "right" = "left"): string[] {
  const widths = (rows[0] ?? []).map((_, column) => Math.max(...rows.map((row) => (row[column] ?? "").length)));
  const cell = (text: string, column: number) => (column === 0 && firstColumn === "left" ? text.padEnd(widths[column] ?? 0) : text.padStart(widths[column] ?? 0));
  return rows.map((row) => `  ${row.map(cell).join("  ")}`.trimEnd());
}
