import { env } from "cloudflare:workers";
import { afterEach, describe, expect, it, vi } from "vitest";
import { call, getJson, postCallback, resetDatabase, tokens } from "../helpers";

afterEach(() => {
	vi.restoreAllMocks();
});

describe("routing and the error shape", () => {
	it("GET /healthz answers without auth", async () => {
		const response = await call("/healthz");
		expect(response.status).toBe(200);
		expect(await response.json()).toEqual({ ok: true });
	});

	it("an unknown path is 404 not_found", async () => {
		const response = await call("/v1/nothing-here");
		expect(response.status).toBe(404);
		expect(await response.json()).toEqual({
			error: { code: "not_found", message: "No such resource" },
		});
	});

	it("a known path with another method is 405 with Allow", async () => {
		const response = await call("/v1/events", { method: "DELETE" });
		expect(response.status).toBe(405);
		expect(response.headers.get("allow")).toBe("GET, HEAD");
		expect(((await response.json()) as { error: { code: string } }).error.code).toBe(
			"method_not_allowed",
		);
		const callback = await call(`/v1/callbacks/tencent/${tokens.callback}`, { method: "PUT" });
		expect(callback.status).toBe(405);
		expect(callback.headers.get("allow")).toBe("POST, GET, HEAD");
	});

	it.each([
		["GET", "/v1/suppressions/check", "POST"],
		["PUT", "/v1/suppressions/check", "POST"],
		["PUT", "/v1/suppressions/export", "GET, HEAD"],
		["GET", "/v1/suppressions/import", "POST"],
		["DELETE", "/v1/suppressions/import", "POST"],
		["POST", "/v1/suppressions/a%40example.com", "GET, HEAD, PUT, DELETE"],
	])("%s %s is 405 with Allow %s, not read as an address", async (method, path, allow) => {
		const response = await call(path, {
			method,
			headers: { authorization: `Bearer ${tokens.admin}` },
		});
		expect(response.status).toBe(405);
		expect(response.headers.get("allow")).toBe(allow);
	});

	it.each([
		["/healthz", null],
		["/openapi.json", null],
		["/v1/events", tokens.lookup],
		["/v1/suppressions/a%40example.com", tokens.lookup],
		["/v1/suppressions/a%40example.com/history", tokens.lookup],
		["/v1/suppressions/export", tokens.lookup],
		[`/v1/callbacks/tencent/${tokens.callback}`, null],
	])("HEAD %s answers as GET does, without a body", async (path, token) => {
		const headers: Record<string, string> = token ? { authorization: `Bearer ${token}` } : {};
		const get = await call(path, { headers });
		const head = await call(path, { method: "HEAD", headers });
		expect(get.status).toBe(200);
		expect(head.status).toBe(200);
		expect(head.headers.get("content-type")).toBe(get.headers.get("content-type"));
		expect(head.body).toBeNull();
		expect((await call(path, { method: "HEAD" })).status).toBe(token ? 401 : 200);
	});

	it("a GET path lists HEAD in its Allow", async () => {
		const response = await call("/v1/suppressions/a%40example.com", { method: "POST" });
		expect(response.headers.get("allow")).toBe("GET, HEAD, PUT, DELETE");
	});

	it("refuses more than 100 query parameters before routing, with the API's headers", async () => {
		const query = (n: number) => Array.from({ length: n }, (_, i) => `p${i}=1`).join("&");
		const over = await getJson(`/v1/events?${query(101)}`);
		expect(over.status).toBe(400);
		expect(await over.json()).toEqual({
			error: {
				code: "invalid_query",
				message: "A request takes at most 100 query parameters",
			},
		});
		expect(over.headers.get("x-request-id")).toMatch(/^[0-9a-f-]{36}$/);
		expect(over.headers.get("cache-control")).toBe("no-store");
		// At 100 the route reads them, and names the ones it does not know.
		const at = await getJson(`/v1/events?${query(100)}`);
		expect(((await at.json()) as { error: { issues: unknown[] } }).error.issues).toHaveLength(100);
		// A callback reads no query: it is stored whatever its URL carries.
		const callback = await call(`/v1/callbacks/tencent/${tokens.callback}?${query(101)}`, {
			method: "POST",
			body: JSON.stringify({ event: "open", email: "q@example.com", timestamp: 100 }),
		});
		expect(await callback.json()).toMatchObject({ ok: true, stored: 1 });
	});

	it("a query parameter that is not validly URL-encoded is refused by name; UTF-8 is read", async () => {
		await resetDatabase();
		await postCallback({
			event: "unsubscribe",
			email: "u@example.com",
			fromDomain: "bücher.de",
			timestamp: 1767225600,
		});
		const lookup = (query: string) =>
			getJson(`/v1/suppressions/u%40example.com?consistent=true&${query}`);
		const utf8 = await lookup("fromDomain=b%C3%BCcher.de");
		expect(await utf8.json()).toMatchObject({ suppressed: true });
		// Latin-1's ü once read as U+FFFD: another domain, for which the address was not suppressed.
		const latin1 = await lookup("fromDomain=b%FCcher.de");
		expect(latin1.status).toBe(400);
		expect(await latin1.json()).toEqual({
			error: {
				code: "invalid_query",
				message: "The query parameters are not valid",
				issues: [{ path: "fromDomain", message: "must be validly URL-encoded (UTF-8)" }],
			},
		});
		const name = await getJson("/v1/events?limit=5&%E0%A4=1");
		expect(((await name.json()) as { error: { issues: unknown } }).error.issues).toEqual([
			{ path: "%E0%A4", message: "must be validly URL-encoded (UTF-8)" },
		]);
		// A name that decodes is named as decoded when only its value does not.
		const value = await getJson("/v1/events?%65vent=%FF");
		expect(((await value.json()) as { error: { issues: unknown } }).error.issues).toEqual([
			{ path: "event", message: "must be validly URL-encoded (UTF-8)" },
		]);
	});

	it("a route that takes no body refuses one, and takes an empty one as none", async () => {
		const remove = (body?: string) =>
			call("/v1/suppressions/a%40example.com", {
				method: "DELETE",
				headers: { authorization: `Bearer ${tokens.admin}` },
				body,
			});
		expect((await remove('{"list":"manual"}')).status).toBe(400);
		expect((await remove("1")).status).toBe(400);
		expect((await remove("")).status).toBe(200);
		expect((await remove()).status).toBe(200);
	});

	it("every answer carries API headers", async () => {
		for (const response of [
			await call("/healthz"),
			await call("/nope"),
			await getJson("/v1/events"),
		]) {
			expect(response.headers.get("content-type")).toBe("application/json; charset=utf-8");
			expect(response.headers.get("x-content-type-options")).toBe("nosniff");
			expect(response.headers.get("cache-control")).toBe("no-store");
			expect(response.headers.get("x-request-id")).toMatch(/^[0-9a-f-]{36}$/);
		}
	});

	it("the request id is Cloudflare's ray id when the request has one, in the header and the log", async () => {
		const lines: Record<string, unknown>[] = [];
		vi.spyOn(console, "log").mockImplementation((line: string) => {
			lines.push(JSON.parse(line) as Record<string, unknown>);
		});
		const response = await call("/nope", { headers: { "cf-ray": "8f1e2d3c4b5a6978-FRA" } });
		expect(response.status).toBe(404);
		expect(response.headers.get("x-request-id")).toBe("8f1e2d3c4b5a6978-FRA");
		expect(lines).toMatchObject([{ requestId: "8f1e2d3c4b5a6978-FRA", status: 404 }]);
	});

	it("an unexpected failure is a generic 500 with details only in the log", async () => {
		const errors: string[] = [];
		vi.spyOn(console, "error").mockImplementation((line: string) => {
			errors.push(line);
		});
		const db = new Proxy(env.DB, {
			get(target, property) {
				if (property === "prepare") {
					return () => {
						throw new Error("SQLITE_SECRET_DETAIL: driver exploded");
					};
				}
				return Reflect.get(target, property);
			},
		});
		const response = await call(
			"/v1/events",
			{ headers: { authorization: `Bearer ${tokens.lookup}` } },
			{ ...env, DB: db },
		);
		expect(response.status).toBe(500);
		const text = await response.text();
		expect(JSON.parse(text)).toEqual({ error: { code: "internal", message: "Internal error" } });
		expect(text).not.toContain("SQLITE_SECRET_DETAIL");
		expect(errors.some((line) => line.includes("SQLITE_SECRET_DETAIL"))).toBe(true);
		// The request's own line is an error too, coded as the caller saw it.
		expect(errors.map((line) => JSON.parse(line))).toContainEqual(
			expect.objectContaining({
				level: "error",
				message: "request",
				status: 500,
				code: "internal",
			}),
		);
	});

	it("logs one JSON line per request with a request id and never the callback token", async () => {
		const lines: string[] = [];
		for (const method of ["log", "warn", "error"] as const) {
			vi.spyOn(console, method).mockImplementation((line: string) => {
				lines.push(line);
			});
		}
		const event = { event: "open", email: "log@example.com", timestamp: 1 };
		// A callback that only stores new events is routine: no line of its own.
		await postCallback(event);
		expect(lines).toEqual([]);
		await postCallback(event);
		await postCallback("{bad json");
		// One line per request, the callback's counts or its rejection in it.
		expect(lines).toHaveLength(2);
		const [repeated, refused] = lines.map((line) => JSON.parse(line) as Record<string, unknown>);
		expect(repeated).toMatchObject({
			message: "request",
			route: "/v1/callbacks/tencent/:token",
			status: 200,
			received: 1,
			stored: 0,
			duplicates: 1,
			changed: 0,
		});
		expect(refused).toMatchObject({
			message: "request",
			status: 400,
			code: "invalid_json",
			rejectedId: expect.any(String),
		});
		for (const line of lines) {
			const entry = JSON.parse(line) as Record<string, unknown>;
			expect(typeof entry.requestId).toBe("string");
			expect(line).not.toContain(tokens.callback);
		}
	});
});

describe("which requests log", () => {
	it("a failed request's line says why: its code, and a 5xx's message at error level", async () => {
		const lines: Record<string, unknown>[] = [];
		for (const method of ["log", "warn", "error"] as const) {
			vi.spyOn(console, method).mockImplementation((line: string) => {
				lines.push(JSON.parse(line) as Record<string, unknown>);
			});
		}
		// Every callback refused for a bad setting: Tencent sees only a 503, the operator this line.
		const bad = { ...env, SOFT_BOUNCE_LIMIT: "0" } as Env;
		const event = { event: "open", email: "why@example.com", timestamp: 1 };
		expect((await postCallback(event, { env: bad })).status).toBe(503);
		expect(lines).toEqual([
			expect.objectContaining({
				level: "error",
				message: "request",
				route: "/v1/callbacks/tencent/:token",
				status: 503,
				code: "not_configured",
				error:
					"Invalid setting SOFT_BOUNCE_LIMIT (SOFT_BOUNCE_LIMIT: must be a whole number from 1 to 100)",
			}),
		]);
		lines.length = 0;
		// A caller's mistake: its code, not its message, which may repeat what was sent.
		expect((await getJson("/v1/suppressions/not-an-address")).status).toBe(400);
		expect(lines).toHaveLength(1);
		expect(lines[0]).toMatchObject({ level: "info", status: 400, code: "invalid_email" });
		expect(lines[0]).not.toHaveProperty("error");
		expect(JSON.stringify(lines)).not.toContain("not-an-address");
	});

	it("a successful read logs nothing, a failed one and a write log their line", async () => {
		const lines: string[] = [];
		vi.spyOn(console, "log").mockImplementation((line: string) => {
			lines.push(line);
		});
		await getJson("/v1/events");
		await call("/healthz");
		expect(lines).toEqual([]);
		await getJson("/v1/events?limit=0");
		await call("/v1/suppressions/a%40example.com", {
			method: "PUT",
			headers: { authorization: `Bearer ${tokens.admin}` },
			body: "{}",
		});
		expect(lines.map((line) => (JSON.parse(line) as { status: number }).status)).toEqual([
			400, 200,
		]);
	});

	it("a request refused for its number of query parameters logs its route pattern", async () => {
		const lines: Array<Record<string, unknown>> = [];
		vi.spyOn(console, "log").mockImplementation((line: string) => {
			lines.push(JSON.parse(line));
		});
		const query = Array.from({ length: 101 }, (_, i) => `p${i}=1`).join("&");
		const statuses = [];
		for (const path of ["/v1/events", "/v1/suppressions/a%40example.com", "/nowhere"]) {
			statuses.push((await getJson(`${path}?${query}`)).status);
		}
		// A path no route serves is not found, whatever its query.
		expect(statuses).toEqual([400, 400, 404]);
		expect(lines.map((line) => line.route)).toEqual(["/v1/events", "/v1/suppressions/:email", "*"]);
		expect(lines.map((line) => line.code)).toEqual(["invalid_query", "invalid_query", "not_found"]);
	});

	it("a callback logs only when it repeats events or changes suppressions", async () => {
		const lines: Array<Record<string, unknown>> = [];
		vi.spyOn(console, "log").mockImplementation((line: string) => {
			lines.push(JSON.parse(line) as Record<string, unknown>);
		});
		await postCallback({ event: "delivered", email: "quiet@example.com", timestamp: 1 });
		expect(lines).toEqual([]);
		await postCallback({
			event: "bounce",
			bounceType: "hard",
			email: "quiet@example.com",
			timestamp: 2,
		});
		expect(lines).toMatchObject([{ status: 200, stored: 1, duplicates: 0, changed: 1 }]);
	});
});

describe("bearer auth", () => {
	it("LOOKUP_TOKENS and ADMIN_TOKENS unset: 503 not_configured", async () => {
		const { LOOKUP_TOKENS, ADMIN_TOKENS, ...rest } = env;
		const response = await call(
			"/v1/events",
			{ headers: { authorization: `Bearer ${tokens.lookup}` } },
			rest as Env,
		);
		expect(response.status).toBe(503);
		const body = (await response.json()) as { error: { code: string; message: string } };
		expect(body.error.code).toBe("not_configured");
		expect(body.error.message).toContain("LOOKUP_TOKENS");
	});

	it("with LOOKUP_TOKENS unset, an admin token still reads", async () => {
		const { LOOKUP_TOKENS, ...rest } = env;
		const response = await call(
			"/v1/events",
			{ headers: { authorization: `Bearer ${tokens.admin}` } },
			rest as Env,
		);
		expect(response.status).toBe(200);
	});

	it("each token of a comma-separated list passes, the first as well as the last", async () => {
		const rotating = {
			...env,
			LOOKUP_TOKENS: `${tokens.lookup},second-lookup-token-0002`,
			ADMIN_TOKENS: `${tokens.admin},second-admin-token-00002`,
		};
		for (const token of [
			tokens.lookup,
			"second-lookup-token-0002",
			tokens.admin,
			"second-admin-token-00002",
		]) {
			const response = await call(
				"/v1/events",
				{ headers: { authorization: `Bearer ${token}` } },
				rotating,
			);
			expect(response.status, token).toBe(200);
		}
	});

	it("a header with anything before the scheme or after the token does not pass", async () => {
		for (const header of [
			`Bearer ${tokens.lookup} ${tokens.lookup}`,
			`Bearer ${tokens.lookup} extra`,
			`Basic Bearer ${tokens.lookup}`,
			`xBearer ${tokens.lookup}`,
		]) {
			const response = await call("/v1/events", { headers: { authorization: header } });
			expect(response.status, header).toBe(401);
		}
	});

	it("spaces after the scheme and after the token are allowed", async () => {
		for (const header of [`Bearer  ${tokens.lookup}`, `Bearer ${tokens.lookup} `]) {
			const response = await call("/v1/events", { headers: { authorization: header } });
			expect(response.status, header).toBe(200);
		}
	});

	it("a token prefix does not pass", async () => {
		expect((await getJson("/v1/events", tokens.lookup.slice(0, -1))).status).toBe(401);
	});

	it("the scheme is case-insensitive", async () => {
		const response = await call("/v1/events", {
			headers: { authorization: `bearer ${tokens.lookup}` },
		});
		expect(response.status).toBe(200);
	});
});
