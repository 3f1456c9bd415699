// `npm run types` (or `-- --check`): generates worker-configuration.d.ts from wrangler.toml alone.
// The empty scripts/types.env stands in for a developer's .dev.vars (secrets), so the generated
// file is the same on every machine and the freshness check in `npm run check` is stable.
import { wrangler } from "./wrangler.mjs";

const args = [
	"types",
	"--strict-vars=false",
	"--env-file",
	"scripts/types.env",
	...process.argv.slice(2),
];
process.exitCode = await wrangler(args);
