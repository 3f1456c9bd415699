import { env } from "cloudflare:workers";
import { beforeEach, describe, expect, it } from "vitest";
import { KV_WRITE_SETTLE_SECONDS } from "../../src/cron/edge-repair";
import { KV_OPERATIONS_PER_RUN } from "../../src/cron/reconcile";
import { EDGE_SYNC_AT_ONCE } from "../../src/suppressions/edge";
import { LAG_KEY } from "../../src/suppressions/edge-lag";
import {
	call,
	countingKv,
	envWithFailingSql,
	lookup,
	parkSweeps,
	postCallback,
	putSuppression,
	resetDatabase,
	runCron,
	tokens,
} from "../helpers";

const admin = { authorization: `Bearer ${tokens.admin}` };

/** A hard bounce of `email`, sent through the Worker with the plain bindings. */
async function hardBounce(email: string): Promise<void> {
	const response = await postCallback({
		event: "bounce",
		bounceType: "hard_bounce",
		email,
		timestamp: 2,
		fromDomain: "c.example.com",
	});
	expect(response.status).toBe(200);
}

/**
 * An env whose KV runs `meanwhile` (another request, start to end) the first time `method` is
 * called for `key`, before doing it: a change that comes between a writer's read of D1 and its
 * write of the key.
 */
function envRacing(method: "put" | "get" | "delete", key: string, meanwhile: () => Promise<void>) {
	let raced = false;
	const kv = new Proxy(env.SUPPRESSIONS, {
		get(target, property) {
			const value = Reflect.get(target, property);
			if (property !== method) return typeof value === "function" ? value.bind(target) : value;
			return async (...args: unknown[]) => {
				const keys = Array.isArray(args[0]) ? args[0] : [args[0]];
				if (!raced && keys.includes(key)) {
					raced = true;
					await meanwhile();
				}
				return Reflect.apply(value, target, args);
			};
		},
	});
	return { ...env, SUPPRESSIONS: kv } as Env;
}

/**
 * An env whose D1 fails the reads of addresses' entries run on their own (`all`), after the first
 * `after` of them: a writer's check of its KV writes that D1 cannot answer.
 */
function envFailingEntryReads(after: number): Env {
	let reads = 0;
	const failing = (statement: D1PreparedStatement): D1PreparedStatement => {
		const all = Reflect.get(statement, "all") as (...args: unknown[]) => Promise<unknown>;
		Object.defineProperty(statement, "all", {
			value: (...args: unknown[]) =>
				++reads > after
					? Promise.reject(new Error("D1_ERROR: injected"))
					: Reflect.apply(all, statement, args),
		});
		const bind = statement.bind.bind(statement);
		Object.defineProperty(statement, "bind", {
			value: (...values: unknown[]) => failing(bind(...values)),
		});
		return statement;
	};
	const db = new Proxy(env.DB, {
		get(target, property) {
			if (property === "prepare") {
				return (sql: string) => {
					const statement = target.prepare(sql);
					return sql.includes("PARTITION BY email") ? failing(statement) : statement;
				};
			}
			const value = Reflect.get(target, property);
			return typeof value === "function" ? value.bind(target) : value;
		},
	});
	return { ...env, DB: db };
}

/** `testEnv` with its KV wrapped to count the operations a Worker invocation is allowed. */
function countingOperations(testEnv: Env) {
	const counts = { operations: 0 };
	const kv = new Proxy(testEnv.SUPPRESSIONS, {
		get(target, property) {
			const value = Reflect.get(target, property);
			if (typeof value !== "function") return value;
			return (...args: unknown[]) => {
				if (["get", "put", "delete", "list"].includes(String(property))) counts.operations++;
				return Reflect.apply(value, target, args);
			};
		},
	});
	return { counts, env: { ...testEnv, SUPPRESSIONS: kv } as Env };
}

/** The address's key, parsed, or null. */
async function keyOf(email: string): Promise<Array<{ list: string }> | null> {
	const text = await env.SUPPRESSIONS.get(`s:${email}`);
	return text === null ? null : JSON.parse(text);
}

/** A lookup for a sender the older entries do not cover, through a binding that reads the mark. */
async function lookupElsewhere(email: string) {
	return lookup(email, "?fromDomain=b.example.com", countingKv().env);
}

describe("a writer whose KV write overwrote a newer change's marks KV as lagging", () => {
	beforeEach(resetDatabase);

	it("a callback whose write lands after a later callback's", async () => {
		const racing = envRacing("put", "s:x@example.com", () => hardBounce("x@example.com"));
		await postCallback(
			{ event: "unsubscribe", email: "x@example.com", timestamp: 1, fromDomain: "a.example.com" },
			{ env: racing },
		);
		// The unsubscribe's entries, without the hard bounce, are what KV kept ...
		expect(await keyOf("x@example.com")).toEqual([
			expect.objectContaining({ list: "unsubscribe" }),
		]);
		// ... and the lookup does not believe them.
		expect(await env.SUPPRESSIONS.get(LAG_KEY)).not.toBeNull();
		expect(await lookupElsewhere("x@example.com")).toMatchObject({
			suppressed: true,
			entries: [expect.objectContaining({ list: "bounce" })],
		});
	});

	it("an import whose write lands after a callback's", async () => {
		const racing = envRacing("put", "s:x@example.com", () => hardBounce("x@example.com"));
		const response = await call(
			"/v1/suppressions/import",
			{
				method: "POST",
				headers: { ...admin, "content-type": "text/csv" },
				body: "email,list,scope,reason,source,created_at,updated_at,expires_at\nx@example.com,manual,a.example.com,,api,,,",
			},
			racing,
		);
		expect(await response.json()).toEqual({ imported: 1, unchanged: 0, failed: [] });
		expect(await keyOf("x@example.com")).toEqual([expect.objectContaining({ list: "manual" })]);
		expect((await lookupElsewhere("x@example.com")).suppressed).toBe(true);
	});

	it("an import of as many addresses as one request writes, whose write lands after a callback's", async () => {
		const lines = Array.from(
			{ length: EDGE_SYNC_AT_ONCE },
			(_, i) => `x${i}@example.com,manual,a.example.com,,api,,,`,
		);
		const racing = envRacing("put", "s:x0@example.com", () => hardBounce("x0@example.com"));
		const response = await call(
			"/v1/suppressions/import",
			{
				method: "POST",
				headers: { ...admin, "content-type": "text/csv" },
				body: ["email,list,scope,reason,source,created_at,updated_at,expires_at", ...lines].join(
					"\n",
				),
			},
			racing,
		);
		expect(await response.json()).toEqual({
			imported: EDGE_SYNC_AT_ONCE,
			unchanged: 0,
			failed: [],
		});
		expect(await keyOf("x0@example.com")).toEqual([expect.objectContaining({ list: "manual" })]);
		expect((await lookupElsewhere("x0@example.com")).suppressed).toBe(true);
	});

	it("a cron run that read an address before a callback changed it", async () => {
		await putSuppression("x@example.com", { scope: "a.example.com" });
		// The run reads D1, then KV, then writes: the bounce comes between the two reads.
		await runCron(
			Date.now(),
			envRacing("get", "s:x@example.com", () => hardBounce("x@example.com")),
		);
		expect(await keyOf("x@example.com")).toEqual([expect.objectContaining({ list: "manual" })]);
		expect((await lookupElsewhere("x@example.com")).suppressed).toBe(true);
		// The bounce queued the address, and a run after it settles writes the key.
		await runCron(Date.now() + (KV_WRITE_SETTLE_SECONDS + 1) * 1000);
		expect(await keyOf("x@example.com")).toEqual([
			expect.objectContaining({ list: "bounce" }),
			expect.objectContaining({ list: "manual" }),
		]);
	});

	it("a cron run that deleted an orphan key after a callback gave it entries", async () => {
		await env.SUPPRESSIONS.put("s:y@example.com", "[]");
		await runCron(
			Date.now(),
			envRacing("delete", "s:y@example.com", () => hardBounce("y@example.com")),
		);
		expect(await keyOf("y@example.com")).toBeNull();
		expect((await lookupElsewhere("y@example.com")).suppressed).toBe(true);
	});

	it("a cron run that fails after a write a callback overtook", async () => {
		await putSuppression("x@example.com", { scope: "a.example.com" });
		// The key went missing, so the drain writes it once the PUT has settled.
		await env.SUPPRESSIONS.delete("s:x@example.com");
		// The bounce comes between the drain's two reads; then D1 refuses the sweeps' position.
		const racing = envRacing("get", "s:x@example.com", () => hardBounce("x@example.com"));
		await expect(
			runCron(Date.now() + (KV_WRITE_SETTLE_SECONDS + 1) * 1000, {
				...racing,
				DB: envWithFailingSql("FROM cron_state").DB,
			}),
		).rejects.toThrow("injected");
		expect(await keyOf("x@example.com")).toEqual([expect.objectContaining({ list: "manual" })]);
		expect((await lookupElsewhere("x@example.com")).suppressed).toBe(true);
	});

	it("a callback whose check of its write D1 cannot answer", async () => {
		await postCallback(
			{ event: "bounce", bounceType: "hard_bounce", email: "x@example.com", timestamp: 1 },
			{ env: envFailingEntryReads(0) },
		);
		expect(await keyOf("x@example.com")).toEqual([expect.objectContaining({ list: "bounce" })]);
		expect(await env.SUPPRESSIONS.get(LAG_KEY)).not.toBeNull();
	});

	it("a cron run whose check of its writes D1 cannot answer", async () => {
		await putSuppression("x@example.com", { scope: "a.example.com" });
		await env.SUPPRESSIONS.delete("s:x@example.com");
		await parkSweeps();
		// The drain reads the entries and writes the key; the read after the write fails.
		await runCron(Date.now() + (KV_WRITE_SETTLE_SECONDS + 1) * 1000, envFailingEntryReads(1));
		expect(await keyOf("x@example.com")).toEqual([expect.objectContaining({ list: "manual" })]);
		expect(await env.SUPPRESSIONS.get(LAG_KEY)).not.toBeNull();
	});

	it("a run whose sweep of KV takes the rest of its budget keeps two operations for the mark", async () => {
		await putSuppression("x@example.com", { scope: "a.example.com" });
		// 1,000 keys of addresses without entries, listed before x's.
		for (let i = 0; i < 1000; i += 100) {
			await Promise.all(
				Array.from({ length: 100 }, (_, j) =>
					env.SUPPRESSIONS.put(`s:o${String(i + j).padStart(4, "0")}@example.com`, "[]"),
				),
			);
		}
		const counting = countingOperations(
			envRacing("get", "s:x@example.com", () => hardBounce("x@example.com")),
		);
		await runCron(Date.now(), { ...counting.env, RECONCILE_BATCH_SIZE: "5000" });
		// The sweep of D1 reads x's key and writes it (2); the listing (1) deletes 895 orphans, all
		// the budget leaves it but the two the mark then takes (it reads the stored mark first).
		expect(await env.SUPPRESSIONS.get(LAG_KEY)).not.toBeNull();
		expect(counting.counts.operations).toBe(KV_OPERATIONS_PER_RUN);
		expect(await env.SUPPRESSIONS.get("s:o0894@example.com")).toBeNull();
		expect(await env.SUPPRESSIONS.get("s:o0895@example.com")).toBe("[]");
	});

	it("writers that D1 has not moved on from put no mark", async () => {
		const callback = countingKv();
		await postCallback(
			{ event: "bounce", bounceType: "hard_bounce", email: "z@example.com", timestamp: 1 },
			{ env: callback.env },
		);
		const put = await call(
			"/v1/suppressions/w@example.com",
			{ method: "PUT", headers: admin, body: JSON.stringify({ scope: "a.example.com" }) },
			callback.env,
		);
		expect(put.status).toBe(200);
		expect(callback.counts.put).toBe(2);
		expect(await env.SUPPRESSIONS.get(LAG_KEY)).toBeNull();
		// A key the cron finds wrong and writes again.
		await env.SUPPRESSIONS.put("s:z@example.com", "[]");
		await env.SUPPRESSIONS.put("s:v@example.com", "[]");
		await runCron(Date.now() + (KV_WRITE_SETTLE_SECONDS + 1) * 1000);
		expect(await keyOf("z@example.com")).toEqual([expect.objectContaining({ list: "bounce" })]);
		expect(await keyOf("v@example.com")).toBeNull();
		expect(await env.SUPPRESSIONS.get(LAG_KEY)).toBeNull();
	});

	it("a writer of an entry that expires within the hour puts no mark", async () => {
		const expiresAt = new Date(Date.now() + 3_600_000).toISOString();
		const put = await call("/v1/suppressions/soon%40example.com", {
			method: "PUT",
			headers: admin,
			body: JSON.stringify({ expiresAt }),
		});
		expect(put.status).toBe(200);
		expect(await keyOf("soon@example.com")).toEqual([expect.objectContaining({ list: "manual" })]);
		expect(await env.SUPPRESSIONS.get(LAG_KEY)).toBeNull();
	});

	it("a removal that D1 has not moved on from puts no mark", async () => {
		await putSuppression("x@example.com", { scope: "a.example.com" });
		const response = await call("/v1/suppressions/x%40example.com", {
			method: "DELETE",
			headers: admin,
		});
		expect(response.status).toBe(200);
		expect(await keyOf("x@example.com")).toBeNull();
		expect(await env.SUPPRESSIONS.get(LAG_KEY)).toBeNull();
	});
});
