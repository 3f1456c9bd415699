// `npm run check`: a lockfile that installs on every platform, Env types fresh, type check, lint and
// format, and the bundle within budget.
import { spawnSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { createRequire } from "node:module";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { missingPlatformBuilds } from "./lockfile.mjs";
import { quietEnv } from "./wrangler.mjs";

/** The deployed bundle's budget, in gzip bytes as `wrangler deploy --dry-run` reports them. */
const BUNDLE_BUDGET_GZIP_KIB = 64;

const require = createRequire(import.meta.url);
const bin = (pkg, path) => join(dirname(require.resolve(`${pkg}/package.json`)), path);

/** Runs a step; on failure, says so and throws (so that `finally` blocks still run). */
function run(label, file, args) {
	console.log(`\n== ${label}`);
	const result = spawnSync(process.execPath, [file, ...args], { env: quietEnv, encoding: "utf8" });
	process.stdout.write(result.stdout);
	process.stderr.write(result.stderr);
	if (result.status !== 0) fail(label);
	return result.stdout;
}

class CheckFailed extends Error {}

function fail(message) {
	console.error(`check failed: ${message}`);
	throw new CheckFailed(message);
}

const wrangler = bin("wrangler", "bin/wrangler.js");
try {
	checkAll();
} catch (error) {
	if (!(error instanceof CheckFailed)) throw error;
	process.exit(1);
}
console.log("\ncheck passed");

function checkAll() {
	console.log("\n== package-lock.json holds every platform's build");
	const lockfile = join(import.meta.dirname, "..", "package-lock.json");
	const missing = missingPlatformBuilds(JSON.parse(readFileSync(lockfile, "utf8")));
	if (missing.length > 0) {
		console.error(missing.join("\n"));
		fail(
			`package-lock.json lacks ${missing.length} platform build(s): the registry had none for that version, so \`npm ci\` fails on those platforms; keep the earlier version`,
		);
	}
	console.log("every optional dependency is locked");
	run("Env types are fresh", join(import.meta.dirname, "types.mjs"), ["--check"]);
	run("type check (src)", bin("typescript", "bin/tsc"), ["--noEmit"]);
	run("type check (test)", bin("typescript", "bin/tsc"), ["--noEmit", "-p", "test"]);
	run("lint and format", bin("@biomejs/biome", "bin/biome"), ["check", "--error-on-warnings", "."]);

	const outdir = mkdtempSync(join(tmpdir(), "bundle-"));
	try {
		const output = run("bundle", wrangler, ["deploy", "--dry-run", "--outdir", outdir]);
		const match = /gzip: ([\d.]+) KiB/.exec(output);
		if (!match) fail("wrangler did not report the gzip size");
		const gzipKiB = Number(match[1]);
		if (gzipKiB > BUNDLE_BUDGET_GZIP_KIB) {
			fail(`bundle is ${gzipKiB} KiB gzip, budget ${BUNDLE_BUDGET_GZIP_KIB} KiB`);
		}
		console.log(`bundle: ${gzipKiB} KiB gzip of ${BUNDLE_BUDGET_GZIP_KIB} KiB budget`);
	} finally {
		rmSync(outdir, { recursive: true, force: true });
	}
}
