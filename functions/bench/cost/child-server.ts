import { fork, type ChildProcess } from "node:child_process";
import { join } from "node:path";
import { constants, PerformanceObserver } from "node:perf_hooks";

/**
 * A server under test in a child process of its own, so that the load generator, the fake
 * model and the database stand-in (all in the bench process) are not billed to it. It reports
 * its own CPU time, memory and full garbage collections over the IPC channel.
 */
export interface Usage {
  readonly cpuMs: number;
  /** Highest RSS of the process's life so far. */
  readonly peakRssMb: number;
  readonly fullGcs: number;
}

type FromChild = { readonly port: number } | { readonly usage: Usage };

export class ChildServer {
  private readonly waiting: { resolve: (usage: Usage) => void; reject: (error: Error) => void }[] = [];
  private exited: string | undefined;

  private constructor(
    readonly name: string,
    readonly baseUrl: string,
    private readonly child: ChildProcess,
  ) {
    child.on("message", (message: FromChild) => {
      if ("usage" in message) this.waiting.shift()?.resolve(message.usage);
    });
    child.on("exit", (code, signal) => {
      this.exited = `${name}: exited (${signal ?? `code ${code ?? "?"}`})`;
      for (const waiter of this.waiting.splice(0)) waiter.reject(new Error(this.exited));
    });
  }

  /** Forks `script` (a file of this folder, built) and waits until it listens. */
  static start(name: string, script: string, env: Readonly<Record<string, string | undefined>>, execArgv: readonly string[] = []): Promise<ChildServer> {
    const child = fork(join(__dirname, script), [], { env, execArgv: [...execArgv], stdio: ["ignore", "inherit", "inherit", "ipc"] });
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => { reject(new Error(`${name}: not listening after 30 s`)); }, 30_000);
      child.once("exit", (code) => { reject(new Error(`${name}: exited with ${code ?? "a signal"} before listening`)); });
      child.once("message", (message: FromChild) => {
        clearTimeout(timer);
        if ("port" in message) resolve(new ChildServer(name, `http://127.0.0.1:${message.port}`, child));
      });
    });
  }

  usage(): Promise<Usage> {
    return new Promise((resolve, reject) => {
      if (this.exited !== undefined) {
        reject(new Error(this.exited));
        return;
      }
      this.waiting.push({ resolve, reject });
      this.child.send("usage");
    });
  }

  stop(): void {
    this.child.kill();
  }
}

/** CPU time this process has used so far, user and system, in ms. */
export function processCpuMs(): number {
  const { user, system } = process.cpuUsage();
  return (user + system) / 1000;
}

/** In the child: tells the parent where it listens, then answers its questions about usage; exits with the parent. */
export function reportToParent(port: number): void {
  let fullGcs = 0;
  new PerformanceObserver((list) => {
    for (const entry of list.getEntries()) if ((entry as { detail?: { kind?: number } }).detail?.kind === constants.NODE_PERFORMANCE_GC_MAJOR) fullGcs += 1;
  }).observe({ entryTypes: ["gc"] });
  const send = (message: FromChild) => process.send?.(message);
  // A normal exit when stopped, so a profile asked for with NODE_OPTIONS=--cpu-prof is written.
  process.on("SIGTERM", () => process.exit(0));
  process.on("message", () => {
    send({
      usage: {
        cpuMs: processCpuMs(),
        peakRssMb: process.resourceUsage().maxRSS / 2 ** 10,
        fullGcs,
      },
    });
  });
  process.on("disconnect", () => process.exit(0));
  send({ port });
}
