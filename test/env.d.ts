// Bindings that exist only under test (see vitest.config.ts).
declare namespace Cloudflare {
	interface Env {
		TEST_MIGRATIONS: import("cloudflare:test").D1Migration[];
		CALLBACK_TOKENS: string;
		LOOKUP_TOKENS: string;
		ADMIN_TOKENS: string;
	}
}

declare module "*.jsonl?raw" {
	const text: string;
	export default text;
}

declare module "*.json?raw" {
	const text: string;
	export default text;
}

declare module "*.toml?raw" {
	const text: string;
	export default text;
}

// Vite's import.meta.glob, as test/node/migrations.test.ts uses it.
interface ImportMeta {
	glob<T>(
		pattern: string,
		options: { query: "?raw"; import: "default"; eager: true },
	): Record<string, T>;
}
