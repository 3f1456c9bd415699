import { env } from "cloudflare:test";
import { describe, expect, it } from "vitest";
import { call, postCallback, resetDatabase, runCron, tokens } from "../helpers";

// Tables that grow with the deployment: millions of events, hundreds of thousands of entries and
// history lines. Only a page of a list may walk one of them, in the order of an index, up to the
// page's LIMIT (its last clause); every other statement must find its rows through an index, however
// many LIMITs its subqueries have. The full scan that once ran on every delivery (docs/scaling.md) was
// found by a benchmark, not a test: this reads SQLite's plan of every statement the Worker runs on
// its busy paths. D1 never runs ANALYZE on its own and the project does not either, so SQLite plans
// these as here, without statistics.
const GROWING = [
	"events",
	"suppressions",
	"suppression_history",
	"suppression_removals",
	"edge_pending",
	"rejected_callbacks",
	"daily_stats",
];

/** The env's D1 binding, recording each statement's SQL and the values it was last bound with. */
function recordingEnv(): { env: Env; statements: Map<string, unknown[]> } {
	const statements = new Map<string, unknown[]>();
	const record = (sql: string, statement: D1PreparedStatement): D1PreparedStatement => {
		const bind = statement.bind.bind(statement);
		Object.defineProperty(statement, "bind", {
			value: (...values: unknown[]) => {
				statements.set(sql, values);
				return record(sql, bind(...values));
			},
		});
		return statement;
	};
	const db = new Proxy(env.DB, {
		get(target, property) {
			if (property === "prepare") {
				return (sql: string) => {
					// One that is never bound is planned only if it has no parameters.
					if (!statements.has(sql) && !sql.includes("?")) statements.set(sql, []);
					return record(sql, target.prepare(sql));
				};
			}
			const value = Reflect.get(target, property);
			return typeof value === "function" ? value.bind(target) : value;
		},
	});
	return { env: { ...env, DB: db }, statements };
}

async function planOf(sql: string, values: unknown[]): Promise<string[]> {
	const { results } = await env.DB.prepare(`EXPLAIN QUERY PLAN ${sql}`)
		.bind(...values)
		.all<{ detail: string }>();
	return results.map((row) => row.detail);
}

describe("query plans of the busy paths", () => {
	it("walk a growing table only up to a LIMIT, and otherwise search an index", async () => {
		await resetDatabase();
		const recording = recordingEnv();
		const testEnv = recording.env;
		const admin = { authorization: `Bearer ${tokens.admin}` };
		const get = (path: string) => call(path, { headers: admin }, testEnv);
		const now = Math.floor(Date.now() / 1000);
		const event = (fields: Record<string, unknown>) => ({
			event: "delivered",
			email: "a@example.com",
			bulkId: "bulk-1",
			messageId: "<m1@example.com>",
			timestamp: now - 100,
			from: "news@news.example.com",
			fromDomain: "news.example.com",
			...fields,
		});
		const post = (body: unknown) => postCallback(body, { env: testEnv });

		// Every form of the insert (one event, a few bound, many through json_each), each policy
		// statement, and the late delivery that rechecks a soft-bounce entry.
		await post(event({}));
		await post([event({ event: "open" }), event({ email: "b@example.com" })]);
		await post(Array.from({ length: 8 }, (_, i) => event({ email: `j${i}@example.com` })));
		await post(event({ event: "bounce", bounceType: "hard", email: "h@example.com" }));
		await post(event({ event: "unsubscribe", email: "u@example.com" }));
		for (let i = 0; i < 3; i++) {
			await post(
				event({
					event: "bounce",
					bounceType: "soft",
					email: "s@example.com",
					timestamp: now - 50 + i,
				}),
			);
		}
		await post(event({ email: "s@example.com", timestamp: now - 48 }));
		await post("not json");

		for (const filter of [
			"",
			"email=a%40example.com",
			"bulkId=bulk-1",
			"messageId=%3Cm1%40example.com%3E",
		]) {
			const page = (await (await get(`/v1/events?limit=1&${filter}`)).json()) as { cursor: string };
			await get(`/v1/events?limit=1&${filter}&cursor=${encodeURIComponent(page.cursor)}`);
		}
		const rejected = (await (await get("/v1/rejected?limit=1")).json()) as {
			cursor: string | null;
		};
		if (rejected.cursor)
			await get(`/v1/rejected?limit=1&cursor=${encodeURIComponent(rejected.cursor)}`);
		await get("/v1/stats");
		await get("/v1/stats?fromDomain=news.example.com");
		await get("/v1/suppressions?limit=1");
		await get("/v1/suppressions/h%40example.com?consistent=true");
		await get("/v1/suppressions/h%40example.com/history");
		await call(
			"/v1/suppressions/p%40example.com",
			{
				method: "PUT",
				headers: admin,
				body: JSON.stringify({ list: "unsubscribe", scope: "x.example.com" }),
			},
			testEnv,
		);
		await call(
			"/v1/suppressions/p%40example.com?scope=x.example.com",
			{ method: "DELETE", headers: admin },
			testEnv,
		);
		await call(
			"/v1/addresses/a%40example.com?suppressions=true",
			{ method: "DELETE", headers: admin },
			testEnv,
		);
		await env.DB.prepare("INSERT INTO soft_bounce_recheck (email) VALUES ('s@example.com')").run();
		await env.DB.prepare("UPDATE edge_pending SET queued_at = 0").run();
		await runCron(Date.now(), testEnv);
		await runCron(Date.now() + 200 * 86_400_000, testEnv);

		const unbounded: string[] = [];
		for (const [sql, values] of recording.statements) {
			// The plan names a table by its alias where the statement gives one (`events AS b`).
			const growing = new Set(GROWING);
			for (const [, table, alias] of sql.matchAll(/\b(\w+)\s+AS\s+(\w+)\b/gi)) {
				if (GROWING.includes(table as string)) growing.add(alias as string);
			}
			for (const line of await planOf(sql, values)) {
				const table = /^SCAN (\w+)/.exec(line)?.[1];
				if (table && growing.has(table) && !/\bLIMIT \?\d*\s*$/.test(sql)) {
					unbounded.push(`${line} in: ${sql.replace(/\s+/g, " ").slice(0, 200)}`);
				}
			}
		}
		// Enough statements to mean the paths above ran (there are about 50).
		expect(recording.statements.size).toBeGreaterThan(40);
		expect(unbounded).toEqual([]);
	});
});
