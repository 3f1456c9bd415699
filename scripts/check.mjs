// `npm run check`: Env types fresh, type check, lint and format, and the bundle within budget.
import { spawnSync } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { createRequire } from "node:module";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { quietEnv } from "./wrangler.mjs";

/** The deployed bundle's budget, in gzip bytes as `wrangler deploy --dry-run` reports them. */
const BUNDLE_BUDGET_GZIP_KIB = 64;

const require = createRequire(import.meta.url);
const bin = (pkg, path) => join(dirname(require.resolve(`${pkg}/package.json`)), path);

function run(label, file, args) {
	console.log(`\n== ${label}`);
	const result = spawnSync(process.execPath, [file, ...args], { env: quietEnv, encoding: "utf8" });
	process.stdout.write(result.stdout);
	process.stderr.write(result.stderr);
	if (result.status !== 0) {
		console.error(`check failed: ${label}`);
		process.exit(result.status ?? 1);
	}
	return result.stdout;
}

const wrangler = bin("wrangler", "bin/wrangler.js");
run("Env types are fresh", join(import.meta.dirname, "types.mjs"), ["--check"]);
run("type check (src)", bin("typescript", "bin/tsc"), ["--noEmit"]);
run("type check (test)", bin("typescript", "bin/tsc"), ["--noEmit", "-p", "test"]);
run("lint and format", bin("@biomejs/biome", "bin/biome"), ["check", "--error-on-warnings", "."]);

const outdir = mkdtempSync(join(tmpdir(), "bundle-"));
try {
	const output = run("bundle", wrangler, ["deploy", "--dry-run", "--outdir", outdir]);
	const match = /gzip: ([\d.]+) KiB/.exec(output);
	if (!match) {
		console.error("check failed: wrangler did not report the gzip size");
		process.exit(1);
	}
	const gzipKiB = Number(match[1]);
	if (gzipKiB > BUNDLE_BUDGET_GZIP_KIB) {
		console.error(
			`check failed: bundle is ${gzipKiB} KiB gzip, budget ${BUNDLE_BUDGET_GZIP_KIB} KiB`,
		);
		process.exit(1);
	}
	console.log(`bundle: ${gzipKiB} KiB gzip of ${BUNDLE_BUDGET_GZIP_KIB} KiB budget`);
} finally {
	rmSync(outdir, { recursive: true, force: true });
}
console.log("\ncheck passed");
