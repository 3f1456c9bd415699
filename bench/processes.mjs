// Starting and stopping wrangler for the benchmarks. Every wrangler runs in its own process group
// (wrangler starts node, which starts workerd), so stopping one kills its whole tree by group id
// (on Windows with taskkill) and no workerd outlives the run.
import { spawn } from "node:child_process";
import { closeSync, openSync, readFileSync } from "node:fs";
import { signalTree, wranglerBin } from "../scripts/wrangler.mjs";

export const WRANGLER_BIN = wranglerBin;

/** No metrics and no Request.cf download: the machine has no internet. */
const WRANGLER_ENV = {
	...process.env,
	WRANGLER_SEND_METRICS: "false",
	CLOUDFLARE_CF_FETCH_ENABLED: "false",
	// No banner, and so no question to the registry whether a newer wrangler exists.
	WRANGLER_HIDE_BANNER: "true",
	NO_COLOR: "1",
	// wrangler's local trace collector (for its local explorer) receives every invocation of every
	// Worker through a streaming tail and writes it to a SQLite store of its own. That is a
	// development tool, not the Worker, like the inspector bench/serve.mjs turns off: measured with
	// the ingest mix, it added about 300 µs of CPU to every request on both sides, and its store's
	// growth made later rounds slower than earlier ones.
	X_LOCAL_OBSERVABILITY: "false",
};

/** Process groups still running. */
const groups = new Map();

function track(child, label) {
	groups.set(child.pid, { child, label });
	// Forget a group only once nothing in it runs any more (workerd may outlive its parent).
	child.on("exit", () => {
		if (!groupAlive(child.pid)) groups.delete(child.pid);
	});
}

/**
 * Runs a wrangler command to completion, stdin not a TTY (so `d1 migrations apply --local` does
 * not ask to confirm). Resolves with its exit code and output; rejects on a non-zero exit.
 */
export function runWrangler(args, { cwd } = {}) {
	return new Promise((resolve, reject) => {
		const child = spawn(process.execPath, [WRANGLER_BIN, ...args], {
			cwd,
			env: WRANGLER_ENV,
			stdio: ["ignore", "pipe", "pipe"],
			detached: true,
			windowsHide: true,
		});
		track(child, `wrangler ${args[0]}`);
		let output = "";
		child.stdout.on("data", (chunk) => {
			output += chunk;
		});
		child.stderr.on("data", (chunk) => {
			output += chunk;
		});
		child.on("error", reject);
		child.on("exit", (code, signal) => {
			if (code === 0) resolve(output);
			else {
				reject(
					new Error(
						`wrangler ${args.join(" ")} failed (${code ?? signal}):\n${output.slice(-3000)}`,
					),
				);
			}
		});
	});
}

/**
 * Starts a long-running Node script (`wrangler dev`, or bench/serve.mjs) in the background with its
 * output in `logFile`: a pipe nobody reads would stall it. Returns a handle with the log's tail for
 * errors and the process group id for CPU accounting.
 */
export function startBackground(label, script, args, logFile) {
	const fd = openSync(logFile, "w");
	const child = spawn(process.execPath, [script, ...args], {
		env: WRANGLER_ENV,
		stdio: ["ignore", fd, fd],
		detached: true,
		windowsHide: true,
	});
	closeSync(fd);
	track(child, label);
	const exited = new Promise((resolve) => child.on("exit", (code) => resolve(code)));
	return {
		label,
		pgid: child.pid,
		exited,
		logTail: () => {
			try {
				return readFileSync(logFile, "utf8").slice(-3000);
			} catch {
				return "";
			}
		},
	};
}

/** Polls `url` until it answers 200; fails if the server exits first or after `timeoutMs`. */
export async function waitUntilReady(server, url, timeoutMs = 90_000) {
	const deadline = Date.now() + timeoutMs;
	let exited = false;
	server.exited.then(() => {
		exited = true;
	});
	while (Date.now() < deadline) {
		if (exited) throw new Error(`${server.label} exited before it was ready:\n${server.logTail()}`);
		try {
			const response = await fetch(url, { signal: AbortSignal.timeout(2000) });
			await response.arrayBuffer();
			if (response.status === 200) return;
		} catch {}
		await new Promise((resolve) => setTimeout(resolve, 250));
	}
	throw new Error(`${server.label} did not answer ${url} in time:\n${server.logTail()}`);
}

/** Stops every process group this run started: SIGTERM, then SIGKILL after `graceMs`. */
export async function stopAll(graceMs = 5000) {
	const running = [...groups.values()];
	for (const { child } of running) signalTree(child.pid, "SIGTERM");
	const deadline = Date.now() + graceMs;
	while (Date.now() < deadline && running.some(({ child }) => groupAlive(child.pid))) {
		await new Promise((resolve) => setTimeout(resolve, 100));
	}
	// workerd may outlive its parent node: kill what is left of each group.
	for (const { child } of running) signalTree(child.pid, "SIGKILL");
}

function groupAlive(pid) {
	return signalTree(pid, 0);
}

/** Process group ids of everything this run started and that may still run. */
export function groupIds() {
	return [...groups.keys()];
}

/** Last resort on exit (synchronous): kill every group still known. */
export function killAllNow() {
	for (const { child } of groups.values()) signalTree(child.pid, "SIGKILL");
}
