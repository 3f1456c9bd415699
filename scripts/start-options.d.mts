/** The names a .dev.vars or .env text defines, as wrangler's dotenv parses it. */
export declare function secretNames(text: string): string[];
/** The names `wrangler dev` has a value for: .dev.vars, else .env and .env.local (and the environment). */
export declare function definedSecrets(
	read: (file: string) => string | undefined,
	env: Record<string, string | undefined>,
): Set<string>;
