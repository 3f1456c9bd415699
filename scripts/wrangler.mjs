// Runs the project's wrangler with the Node that runs this script (the `node` devDependency under
// npm scripts) and without the network calls wrangler makes by default.
import { spawn, spawnSync } from "node:child_process";
import { createRequire } from "node:module";
import { dirname, join } from "node:path";

const require = createRequire(import.meta.url);
export const wranglerBin = join(
	dirname(require.resolve("wrangler/package.json")),
	"bin",
	"wrangler.js",
);

export const quietEnv = {
	...process.env,
	WRANGLER_SEND_METRICS: process.env.WRANGLER_SEND_METRICS ?? "false",
	CLOUDFLARE_CF_FETCH_ENABLED: process.env.CLOUDFLARE_CF_FETCH_ENABLED ?? "false",
};

const SIGNALS = ["SIGINT", "SIGTERM", "SIGHUP"];

/**
 * Runs `wrangler ...args`, inheriting stdio; resolves with its exit code. A signal that stops this
 * script is passed on, so wrangler stops its workerd instead of outliving the script.
 */
export function wrangler(args, options = {}) {
	return new Promise((resolve, reject) => {
		const child = spawn(process.execPath, [wranglerBin, ...args], {
			stdio: "inherit",
			env: quietEnv,
			...options,
		});
		const forward = (signal) => child.kill(signal);
		for (const signal of SIGNALS) process.on(signal, forward);
		child.on("error", reject);
		child.on("exit", (code, signal) => {
			for (const name of SIGNALS) process.off(name, forward);
			resolve(code ?? (signal ? 1 : 0));
		});
	});
}

/**
 * Sends `signal` to the tree of a process started with `detached: true`: on POSIX to its process
 * group (wrangler starts node, which starts workerd); signal 0 only asks whether the group still
 * runs. Windows has neither groups nor signals, so there any other signal ends the tree with
 * `taskkill /T /F`. True when it was delivered.
 */
export function signalTree(pid, signal) {
	try {
		if (process.platform !== "win32") process.kill(-pid, signal);
		else if (signal === 0) process.kill(pid, 0);
		else {
			const result = spawnSync("taskkill", ["/pid", String(pid), "/T", "/F"], { stdio: "ignore" });
			return result.status === 0;
		}
		return true;
	} catch {
		return false;
	}
}
