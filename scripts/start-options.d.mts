/** The port of `npm start -- --port N` (or npm's npm_config_port), 8080 without one, or why not. */
export declare function parsePort(
	args: string[],
	env: Record<string, string | undefined>,
): { port: string; error?: undefined } | { port?: undefined; error: string };
/** The names a .dev.vars or .env text defines, as wrangler's dotenv parses it. */
export declare function secretNames(text: string): string[];
/** The names `wrangler dev` has a value for: .dev.vars, else .env and .env.local (and the environment). */
export declare function definedSecrets(
	read: (file: string) => string | undefined,
	env: Record<string, string | undefined>,
): Set<string>;
