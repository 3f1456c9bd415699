import { join } from "node:path";
import { cloudflareTest, readD1Migrations } from "@cloudflare/vitest-plugin";
import { defineConfig } from "vitest/config";

// Keep wrangler and miniflare off the network (no metrics, no Request.cf download).
process.env.WRANGLER_SEND_METRICS ??= "false";
process.env.CLOUDFLARE_CF_FETCH_ENABLED ??= "false";

export default defineConfig(async () => {
	const migrations = await readD1Migrations(join(import.meta.dirname, "migrations"));
	return {
		plugins: [
			cloudflareTest({
				wrangler: { configPath: "./wrangler.toml" },
				miniflare: {
					// Test-only bindings: the migrations for test/setup.ts, and tokens for the suite.
					bindings: {
						TEST_MIGRATIONS: migrations,
						CALLBACK_TOKENS: "test-callback-token-0001",
						LOOKUP_TOKENS: "test-lookup-token-00001",
						ADMIN_TOKENS: "test-admin-token-000001",
					},
				},
			}),
		],
		test: {
			setupFiles: ["./test/setup.ts"],
			include: ["test/**/*.test.ts"],
			// The Worker logs a JSON line per request; tests that care capture console themselves.
			onConsoleLog: () => false,
		},
	};
});
