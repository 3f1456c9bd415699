import { createExecutionContext, waitOnExecutionContext } from "cloudflare:test";
import { env } from "cloudflare:workers";
import worker from "../src/index";
import samplesText from "./fixtures/tencent-doc-samples.jsonl?raw";

/** Tencent's published samples, as the objects they are. */
export const docSamples: Record<string, unknown>[] = samplesText
	.split("\n")
	.filter((line) => line.trim() !== "")
	.map((line) => JSON.parse(line));

/** The raw lines of the samples, byte for byte as published. */
export const docSampleLines: string[] = samplesText
	.split("\n")
	.filter((line) => line.trim() !== "");

export const tokens = {
	callback: env.CALLBACK_TOKENS,
	lookup: env.LOOKUP_TOKENS,
	admin: env.ADMIN_TOKENS,
};

/** Calls the Worker's own `fetch` with the test bindings (or `testEnv`), waiting for waitUntil work. */
export async function call(
	path: string,
	init?: RequestInit,
	testEnv: Env = env,
): Promise<Response> {
	const ctx = createExecutionContext();
	// A test request has no `cf` object; the Worker never reads it.
	const request = new Request(`http://worker.test${path}`, init) as Request<
		unknown,
		IncomingRequestCfProperties
	>;
	const response = await worker.fetch(request, testEnv, ctx);
	await waitOnExecutionContext(ctx);
	return response;
}

/** POSTs a callback body (a string is sent as is, anything else as JSON). */
export function postCallback(
	body: unknown,
	options: { token?: string; headers?: HeadersInit; env?: Env } = {},
): Promise<Response> {
	const payload =
		typeof body === "string" || body instanceof Uint8Array ? body : JSON.stringify(body);
	return call(
		`/v1/callbacks/tencent/${options.token ?? tokens.callback}`,
		{ method: "POST", body: payload, headers: options.headers },
		options.env,
	);
}

/** GET with a bearer token (the lookup token unless another is given). */
export function getJson(path: string, token: string | null = tokens.lookup): Promise<Response> {
	return call(path, { headers: token === null ? {} : { authorization: `Bearer ${token}` } });
}

/** Deletes every row, so a test does not depend on what ran before it. */
export async function resetDatabase(): Promise<void> {
	await env.DB.batch([
		env.DB.prepare("DELETE FROM events"),
		env.DB.prepare("DELETE FROM rejected_callbacks"),
	]);
}

export async function countRows(table: "events" | "rejected_callbacks"): Promise<number> {
	const row = await env.DB.prepare(`SELECT count(*) AS n FROM ${table}`).first<{ n: number }>();
	return row?.n ?? 0;
}

/** An env whose D1 runs each batch with one more statement that fails, so D1 must roll back. */
export function envWithFailingBatch(): Env {
	const db = new Proxy(env.DB, {
		get(target, property) {
			if (property === "batch") {
				return (statements: D1PreparedStatement[]) =>
					target.batch([...statements, target.prepare("INSERT INTO no_such_table VALUES (1)")]);
			}
			const value = Reflect.get(target, property);
			return typeof value === "function" ? value.bind(target) : value;
		},
	});
	return { ...env, DB: db };
}
