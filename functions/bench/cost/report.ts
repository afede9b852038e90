import { table } from "../shared/figures";

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

/** A section that could not run: what it would have measured, and why not. */
export function skippedSection(title: string, why: string, goals: readonly Omit<Goal, "measured" | "met">[]): Section {
  return { lines: [`${title}: skipped: ${why}`], goals: goals.map((goal) => ({ ...goal, measured: "-", met: undefined })) };
}

export function goalTable(goals: readonly Goal[]): string[] {
  return table([["goal", "measured", "target", "", "when filed"], ...goals.map((goal) => [goal.name, goal.measured, goal.goal, goal.met === undefined ? (goal.measured === "-" ? "skipped" : "") : goal.met ? "met" : "NOT MET", goal.filed])]);
}
