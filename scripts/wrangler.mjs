// Runs the project's wrangler with the Node that runs this script (the `node` devDependency under
// npm scripts) and without the network calls wrangler makes by default.
import { spawn } from "node:child_process";
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

/** Runs `wrangler ...args`, inheriting stdio; resolves with its exit code. */
export function wrangler(args, options = {}) {
	return new Promise((resolve, reject) => {
		const child = spawn(process.execPath, [wranglerBin, ...args], {
			stdio: "inherit",
			env: quietEnv,
			...options,
		});
		child.on("error", reject);
		child.on("exit", (code, signal) => resolve(code ?? (signal ? 1 : 0)));
	});
}
