import { env } from "cloudflare:workers";
import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import { KV_WRITE_SETTLE_SECONDS } from "../../src/cron/edge-repair";
import { countRows, resetDatabase, runCron } from "../helpers";

beforeEach(resetDatabase);
afterEach(() => vi.restoreAllMocks());

/** D1 refuses a string or BLOB value over 2,000,000 bytes; local D1 does not check it. */
const D1_MAX_VALUE_BYTES = 2_000_000;

/**
 * The D1 binding with production D1's limit on one bound value put back: a statement given a
 * larger value fails, as it would on D1, and `refused` counts such statements.
 */
function envWithD1ValueLimit(): { env: Env; refused: number[] } {
	const refused: number[] = [];
	const encoder = new TextEncoder();
	const limit = (statement: D1PreparedStatement): D1PreparedStatement => {
		const bind = statement.bind.bind(statement);
		Object.defineProperty(statement, "bind", {
			value: (...values: unknown[]) => {
				const bound = limit(bind(...values));
				for (const value of values) {
					const size = typeof value === "string" ? encoder.encode(value).byteLength : 0;
					if (size <= D1_MAX_VALUE_BYTES) continue;
					refused.push(size);
					for (const method of ["all", "first", "run", "raw"] as const) {
						Object.defineProperty(bound, method, {
							value: () => Promise.reject(new Error("D1_ERROR: string or blob too big")),
						});
					}
					// In a batch, the whole batch fails.
					Object.defineProperty(bound, "tooBig", { value: true });
				}
				return bound;
			},
		});
		return statement;
	};
	const db = new Proxy(env.DB, {
		get(target, property) {
			if (property === "prepare") return (query: string) => limit(target.prepare(query));
			if (property === "batch") {
				return (statements: D1PreparedStatement[]) =>
					statements.some((statement) => Reflect.get(statement, "tooBig"))
						? Promise.reject(new Error("D1_ERROR: string or blob too big"))
						: target.batch(statements);
			}
			const value = Reflect.get(target, property);
			return typeof value === "function" ? value.bind(target) : value;
		},
	});
	return { env: { ...env, DB: db } as Env, refused };
}

/**
 * The `i`-th of many addresses as long as an address may be (254 UTF-16 units), in characters
 * that take 3 bytes of UTF-8 each: 740 bytes.
 */
function longAddress(i: number): string {
	const local = `${"一".repeat(59)}${String(i).padStart(5, "0")}`;
	return `${local}@${"二".repeat(63)}.${"三".repeat(63)}.${"四".repeat(58)}.cn`;
}

/** Runs the cron and returns the reconcile line it logged, or the error it threw. */
async function cron(at: number, testEnv: Env): Promise<Record<string, unknown>> {
	const lines: Array<Record<string, unknown>> = [];
	const spy = vi.spyOn(console, "log").mockImplementation((line: string) => {
		lines.push(JSON.parse(line) as Record<string, unknown>);
	});
	try {
		await runCron(at, testEnv);
	} catch (error) {
		return { thrown: String(error) };
	} finally {
		spy.mockRestore();
	}
	return lines.find((line) => line.message === "reconcile") ?? {};
}

describe("the reconcile cron with the longest addresses, at RECONCILE_BATCH_SIZE 5000", () => {
	it("keeps every value it binds within D1's 2,000,000 bytes, and finishes", async () => {
		const limited = envWithD1ValueLimit();
		const testEnv = { ...limited.env, RECONCILE_BATCH_SIZE: "5000" } as Env;
		const now = Math.floor(Date.now() / 1000);
		const emails = Array.from({ length: 3000 }, (_, i) => longAddress(i));
		// 3,000 entries that expired a minute ago, each address also queued for a soft-bounce
		// recheck (a callback's second round trip failed): the run rechecks 3,000 addresses,
		// retires 3,000 entries and checks and takes 3,000 queued addresses off the queue.
		await env.DB.prepare(
			`INSERT INTO suppressions (email, list, scope, origin, event_count, created_at, updated_at,
				expires_at)
			SELECT value, 'complaint', '*', 'event', 1, ?2 - 86400, ?2 - 86400, ?2 - 60
			FROM json_each(?1)`,
		)
			.bind(JSON.stringify(emails), now)
			.run();
		await env.DB.prepare("INSERT INTO soft_bounce_recheck (email) SELECT value FROM json_each(?1)")
			.bind(JSON.stringify(emails))
			.run();
		const later = (now + KV_WRITE_SETTLE_SECONDS + 1) * 1000;
		const first = await cron(later, testEnv);
		expect(first).toMatchObject({ rechecked: 3000, expired: 3000 });
		expect(limited.refused).toEqual([]);
		expect(await countRows("suppressions")).toBe(0);
		expect(await countRows("soft_bounce_recheck")).toBe(0);
		expect(await countRows("edge_pending")).toBe(0);
	});

	it("queues what its KV budget leaves unchecked within D1's 2,000,000 bytes", async () => {
		const limited = envWithD1ValueLimit();
		const testEnv = { ...limited.env, RECONCILE_BATCH_SIZE: "5000" } as Env;
		const now = Math.floor(Date.now() / 1000);
		// 900 short addresses whose keys are missing take the run's KV budget (9 bulk reads and 891
		// writes), so the 3,000 long addresses its sweep of D1 lists wait in the queue.
		await env.DB.prepare(
			`WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i < 899)
			INSERT INTO suppressions (email, list, scope, origin, event_count, created_at, updated_at)
			SELECT printf('k%03d@example.com', i), 'complaint', '*', 'event', 1, 1, 1 FROM n`,
		).run();
		const emails = Array.from({ length: 3000 }, (_, i) => longAddress(i));
		await env.DB.prepare(
			`INSERT INTO suppressions (email, list, scope, origin, event_count, created_at, updated_at)
			SELECT value, 'complaint', '*', 'event', 1, 1, 1 FROM json_each(?1)`,
		)
			.bind(JSON.stringify(emails))
			.run();
		await env.DB.prepare("DELETE FROM edge_pending WHERE email NOT LIKE 'k%'").run();
		const later = (now + KV_WRITE_SETTLE_SECONDS + 1) * 1000;
		const first = await cron(later, testEnv);
		expect(first).toMatchObject({ done: false });
		expect(limited.refused).toEqual([]);
		expect(await countRows("edge_pending")).toBeGreaterThanOrEqual(3000);
	});
});
