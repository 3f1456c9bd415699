import { join } from "node:path";
import { cloudflareTest, readD1Migrations } from "@cloudflare/vitest-plugin";
import { defineConfig } from "vitest/config";

// Keep wrangler and miniflare off the network (no metrics, no Request.cf download).
process.env.WRANGLER_SEND_METRICS ??= "false";
process.env.CLOUDFLARE_CF_FETCH_ENABLED ??= "false";

export default defineConfig(async () => {
	const migrations = await readD1Migrations(join(import.meta.dirname, "migrations"));
	return {
		test: {
			// The Worker logs a JSON line per request; tests that care capture console themselves.
			onConsoleLog: () => false,
			projects: [
				{
					// Everything that touches the Worker runs inside workerd on local D1 and KV.
					plugins: [
						cloudflareTest({
							wrangler: { configPath: "./wrangler.toml" },
							miniflare: {
								// Test-only bindings: the migrations for test/setup.ts, tokens for the suite.
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
						name: "workers",
						include: ["test/unit/**/*.test.ts", "test/integration/**/*.test.ts"],
						setupFiles: ["./test/setup.ts"],
						onConsoleLog: () => false,
						// The slowest tests (the cron's KV budget, the policy model) take about 2 s on an
						// idle 2-core machine and twice that under load: a hang, not a slow machine,
						// should be what fails them.
						testTimeout: 20_000,
					},
				},
				{
					// The OpenAPI validator compiles JSON Schemas with new Function, which workerd
					// forbids: the document is built from the same modules and checked in Node.
					test: {
						name: "node",
						include: ["test/node/**/*.test.ts"],
						environment: "node",
					},
				},
			],
		},
	};
});
