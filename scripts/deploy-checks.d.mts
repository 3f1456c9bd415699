/** Problems with the resource ids in the configuration file `file` (the shipped all-zero placeholders). */
export declare function placeholderProblems(toml: string, file?: string): string[];
/** The required secrets missing from `wrangler secret list --format json` output. */
export declare function missingSecrets(listJson: string): string[];
/** The global flags of `npm run deploy -- ...` (for every wrangler command), and whether it is a dry run. */
export declare function splitDeployFlags(args: string[]): { shared: string[]; dryRun: boolean };
/** The configuration file wrangler reads given those global flags (`--config`, `--cwd`). */
export declare function configFile(shared: string[]): string;
