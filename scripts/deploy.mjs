// `npm run deploy [-- wrangler flags such as --env production]`: checks the preconditions, then
// applies the D1 migrations to the remote database and deploys. Refuses, saying what to do, while
// wrangler.toml holds placeholder ids or a required secret is missing. Every flag goes to
// `wrangler deploy`; the global ones (--env, --config, ...) also to the checks and the migrations.
// With --dry-run it only runs `wrangler deploy --dry-run`: nothing remote is read or changed.
import { spawnSync } from "node:child_process";
import { readFileSync } from "node:fs";
import {
	configFile,
	missingSecrets,
	placeholderProblems,
	splitDeployFlags,
} from "./deploy-checks.mjs";
import { quietEnv, wrangler, wranglerBin } from "./wrangler.mjs";

const extra = process.argv.slice(2);
const { shared, dryRun } = splitDeployFlags(extra);
if (dryRun) process.exit(await wrangler(["deploy", ...extra]));

function refuse(lines) {
	console.error(
		["npm run deploy: not deploying.", ...lines.map((line) => `  - ${line}`)].join("\n"),
	);
	process.exit(1);
}

const config = configFile(shared);
const problems = placeholderProblems(readFileSync(config, "utf8"), config);
if (problems.length > 0) refuse(problems);

const listed = spawnSync(
	process.execPath,
	[wranglerBin, "secret", "list", "--format", "json", ...shared],
	{
		env: quietEnv,
		encoding: "utf8",
	},
);
if (listed.status !== 0) {
	refuse([
		"`wrangler secret list` failed, so the secrets cannot be checked. Are you logged in (`npx wrangler login`) and does the Worker exist? Its output:",
		(listed.stderr || listed.stdout).trim(),
	]);
}
const missing = missingSecrets(listed.stdout);
if (missing.length > 0) {
	refuse(
		missing.map(
			(name) =>
				`secret ${name} is not set: \`npx wrangler secret put ${name}\` (a long random value, e.g. \`openssl rand -hex 32\`).`,
		),
	);
}

const migrated = await wrangler(["d1", "migrations", "apply", "DB", "--remote", ...shared]);
if (migrated !== 0) process.exit(migrated);
process.exit(await wrangler(["deploy", ...extra]));
