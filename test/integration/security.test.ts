import { env } from "cloudflare:workers";
import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import { router } from "../../src/router";
import { call, postCallback, resetDatabase, tokens } from "../helpers";

// Every route the router actually serves, so that a route added without auth fails here.
const served = router.routes
	.filter(([method]) => method !== "ALL")
	.map(([method, , , path]) => ({ method, path: path ?? "" }));
const protectedRoutes = served.filter(
	(route) => route.path.startsWith("/v1/") && !route.path.startsWith("/v1/callbacks/"),
);
// A write needs an admin token; the pre-send check is a read sent as POST.
const isWrite = (route: { method: string; path: string }) =>
	!["GET", "HEAD"].includes(route.method) && route.path !== "/v1/suppressions/check";

function concrete(path: string): string {
	return path
		.replace(":email", "someone%40example.com")
		.replace(":id", "no-such-id")
		.replace(":token", tokens.callback);
}

function request(route: { method: string; path: string }, token?: string): Promise<Response> {
	const headers: Record<string, string> = { "content-type": "application/json" };
	if (token !== undefined) headers.authorization = `Bearer ${token}`;
	const body = ["GET", "HEAD"].includes(route.method) ? undefined : "{}";
	return call(concrete(route.path), { method: route.method, headers, body });
}

beforeEach(resetDatabase);
afterEach(() => vi.restoreAllMocks());

describe("every /v1 route but the callback needs a token of the right role", () => {
	it("the walk covers the API", () => {
		expect(protectedRoutes).toHaveLength(20);
		expect(protectedRoutes.filter((route) => route.method === "HEAD")).toHaveLength(7);
		expect(protectedRoutes.filter(isWrite)).toHaveLength(5);
	});

	it.each(protectedRoutes.map((route) => [route.method, route.path, route]))(
		"%s %s refuses no token, a wrong token, a callback token and a token prefix",
		async (_method, _path, route) => {
			for (const token of [
				undefined,
				"wrong-token-wrong-token",
				tokens.callback,
				tokens.admin.slice(0, -1),
				`${tokens.lookup}x`,
			]) {
				const response = await request(route, token);
				expect(response.status, `token ${token}`).toBe(401);
				expect(response.headers.get("www-authenticate")).toBe("Bearer");
				if (route.method !== "HEAD")
					expect(((await response.json()) as { error: { code: string } }).error.code).toBe(
						"unauthorized",
					);
			}
		},
	);

	it("a token set in two lists is a bad setting, never a token of both roles", async () => {
		const shared = "shared-token-0000000001";
		const withTokens = (secrets: Record<string, string>) => ({ ...env, ...secrets }) as Env;
		for (const [testEnv, path, method] of [
			// The callback token would read the events...
			[withTokens({ CALLBACK_TOKENS: shared, LOOKUP_TOKENS: shared }), "/v1/events", "GET"],
			// ...or, also an admin token, erase an address.
			[
				withTokens({ CALLBACK_TOKENS: `${tokens.callback},${shared}`, ADMIN_TOKENS: shared }),
				"/v1/addresses/someone%40example.com",
				"DELETE",
			],
			// A lookup token that is also an admin token would write.
			[
				withTokens({ LOOKUP_TOKENS: `${tokens.lookup},${shared}`, ADMIN_TOKENS: shared }),
				"/v1/suppressions/someone%40example.com",
				"PUT",
			],
		] as const) {
			const response = await call(
				path,
				{ method, headers: { authorization: `Bearer ${shared}` } },
				testEnv,
			);
			expect(response.status, `${method} ${path}`).toBe(503);
			const { error } = (await response.json()) as { error: { code: string; message: string } };
			expect(error.code).toBe("not_configured");
			expect(error.message).not.toContain(shared);
		}
		const callbackEnv = withTokens({ CALLBACK_TOKENS: shared, ADMIN_TOKENS: shared });
		expect((await postCallback({}, { token: shared, env: callbackEnv })).status).toBe(503);
	});

	it.each(protectedRoutes.filter(isWrite).map((route) => [route.method, route.path, route]))(
		"%s %s refuses a lookup token with 403",
		async (_method, _path, route) => {
			const response = await request(route, tokens.lookup);
			expect(response.status).toBe(403);
		},
	);

	it.each(
		protectedRoutes
			.filter((route) => !isWrite(route))
			.map((route) => [route.method, route.path, route]),
	)("%s %s lets a lookup token read", async (_method, _path, route) => {
		const response = await request(route, tokens.lookup);
		expect([401, 403]).not.toContain(response.status);
		expect(response.status).toBeLessThan(500);
	});
});

describe("headers", () => {
	it("no CORS unless CORS_ORIGINS lists the origin", async () => {
		const origin = "https://app.example.com";
		const plain = await call("/v1/events", {
			headers: { origin, authorization: `Bearer ${tokens.lookup}` },
		});
		expect(plain.headers.get("access-control-allow-origin")).toBeNull();
		expect((await call("/v1/events", { method: "OPTIONS", headers: { origin } })).status).toBe(405);

		const withCors = { ...env, CORS_ORIGINS: `${origin}, https://admin.example.com` };
		const preflight = await call(
			"/v1/events",
			{ method: "OPTIONS", headers: { origin } },
			withCors,
		);
		expect(preflight.status).toBe(204);
		expect(preflight.headers.get("access-control-allow-origin")).toBe(origin);
		expect(preflight.headers.get("access-control-allow-headers")).toContain("authorization");
		expect(preflight.headers.get("vary")).toBe("Origin");
		const allowed = await call(
			"/v1/events",
			{ headers: { origin, authorization: `Bearer ${tokens.lookup}` } },
			withCors,
		);
		expect(allowed.headers.get("access-control-allow-origin")).toBe(origin);
		expect(allowed.headers.get("vary")).toBe("Origin");
		// A script on that origin may read the request id, and Retry-After on a 503.
		expect(allowed.headers.get("access-control-expose-headers")).toContain("x-request-id");
		expect(allowed.headers.get("access-control-expose-headers")).toContain("retry-after");
		const other = await call(
			"/v1/events",
			{ headers: { origin: "https://evil.example.com", authorization: `Bearer ${tokens.lookup}` } },
			withCors,
		);
		expect(other.headers.get("access-control-allow-origin")).toBeNull();
		const callback = await call(
			`/v1/callbacks/tencent/${tokens.callback}`,
			{ headers: { origin } },
			withCors,
		);
		expect(callback.headers.get("access-control-allow-origin")).toBeNull();
	});

	it("an allowed origin's preflight names every method and request header the API takes", async () => {
		const origin = "https://app.example.com";
		const withCors = { ...env, CORS_ORIGINS: origin };
		const preflight = await call(
			"/v1/suppressions/someone%40example.com",
			{ method: "OPTIONS", headers: { origin } },
			withCors,
		);
		expect(preflight.status).toBe(204);
		const methods = (preflight.headers.get("access-control-allow-methods") ?? "").split(/, */);
		expect(methods.sort()).toEqual(["DELETE", "GET", "HEAD", "POST", "PUT"]);
		const headers = (preflight.headers.get("access-control-allow-headers") ?? "").split(/, */);
		expect(headers.sort()).toEqual(["authorization", "content-type"]);
		expect(preflight.headers.get("access-control-max-age")).toBe("600");
		const answer = await call(
			"/v1/suppressions/export?format=csv",
			{ headers: { origin, authorization: `Bearer ${tokens.lookup}` } },
			withCors,
		);
		expect(answer.status).toBe(200);
		const exposed = (answer.headers.get("access-control-expose-headers") ?? "").split(/, */);
		expect(exposed.sort()).toEqual([
			"allow",
			"content-disposition",
			"retry-after",
			"www-authenticate",
			"x-request-id",
		]);
	});

	it("an allowed origin's write is served, not taken for a preflight", async () => {
		const origin = "https://app.example.com";
		const withCors = { ...env, CORS_ORIGINS: origin };
		const put = await call(
			"/v1/suppressions/cors%40example.com",
			{
				method: "PUT",
				headers: {
					origin,
					authorization: `Bearer ${tokens.admin}`,
					"content-type": "application/json",
				},
				body: JSON.stringify({ list: "bounce" }),
			},
			withCors,
		);
		expect(put.status).toBe(200);
		expect(put.headers.get("access-control-allow-origin")).toBe(origin);
		const removed = await call(
			"/v1/suppressions/cors%40example.com",
			{ method: "DELETE", headers: { origin, authorization: `Bearer ${tokens.admin}` } },
			withCors,
		);
		expect(removed.status).toBe(200);
		expect(((await removed.json()) as { removed: number }).removed).toBe(1);
	});

	it("no CORS outside /v1, even for an allowed origin", async () => {
		const origin = "https://app.example.com";
		const withCors = { ...env, CORS_ORIGINS: origin };
		for (const path of ["/healthz", "/openapi.json"]) {
			const answer = await call(path, { headers: { origin } }, withCors);
			expect(answer.status, path).toBe(200);
			expect(answer.headers.get("access-control-allow-origin"), path).toBeNull();
			const preflight = await call(path, { method: "OPTIONS", headers: { origin } }, withCors);
			expect(preflight.status, path).toBe(405);
		}
	});

	it("an origin written with capitals or its default port still matches the browser's", async () => {
		const response = await call(
			"/v1/events",
			{
				headers: { origin: "https://ops.example.com", authorization: `Bearer ${tokens.lookup}` },
			},
			{ ...env, CORS_ORIGINS: "https://Ops.Example.com:443" },
		);
		expect(response.status).toBe(200);
		expect(response.headers.get("access-control-allow-origin")).toBe("https://ops.example.com");
	});

	it("a trailing comma and space in CORS_ORIGINS name no origin", async () => {
		const origin = "https://app.example.com";
		const response = await call(
			"/v1/events",
			{ headers: { origin, authorization: `Bearer ${tokens.lookup}` } },
			{ ...env, CORS_ORIGINS: `${origin}, ` },
		);
		expect(response.status).toBe(200);
		expect(response.headers.get("access-control-allow-origin")).toBe(origin);
	});

	it("a wildcard origin, which would never match, answers 503 naming CORS_ORIGINS", async () => {
		const response = await call(
			"/v1/events",
			{ headers: { authorization: `Bearer ${tokens.lookup}` } },
			{ ...env, CORS_ORIGINS: "https://*.example.com" },
		);
		expect(response.status).toBe(503);
		expect(((await response.json()) as { error: { message: string } }).error.message).toContain(
			"CORS_ORIGINS",
		);
	});

	it("a bad CORS_ORIGINS leaves CORS off", async () => {
		const origin = "https://app.example.com";
		const response = await call(
			"/v1/events",
			{ headers: { origin, authorization: `Bearer ${tokens.lookup}` } },
			{ ...env, CORS_ORIGINS: `${origin}, *` },
		);
		expect(response.status).toBe(503);
		expect(response.headers.get("access-control-allow-origin")).toBeNull();
	});

	it("a bad CORS_ORIGINS answers 503 naming it", async () => {
		const response = await call(
			"/v1/events",
			{ headers: { authorization: `Bearer ${tokens.lookup}` } },
			{ ...env, CORS_ORIGINS: "*" },
		);
		expect(response.status).toBe(503);
		expect(((await response.json()) as { error: { message: string } }).error.message).toContain(
			"CORS_ORIGINS",
		);
	});
});

describe("logs", () => {
	it("never contain a token or an address, over a cycle of every route", async () => {
		const lines: string[] = [];
		for (const method of ["log", "warn", "error", "info", "debug"] as const) {
			vi.spyOn(console, method).mockImplementation((...args: unknown[]) => {
				lines.push(args.map(String).join(" "));
			});
		}
		await postCallback({
			event: "bounce",
			bounceType: "hard_bounce",
			email: "x@example.com",
			timestamp: 1,
		});
		await postCallback("{ bad");
		await postCallback(
			{ event: "open", email: "x@example.com", timestamp: 1 },
			{ token: "wrong-token-wrong-token" },
		);
		for (const route of served) {
			await request(route, isWrite(route) ? tokens.admin : tokens.lookup);
		}
		// Successful reads (HEAD as GET) log nothing; callbacks, writes and every failure log a line.
		expect(lines.length).toBeGreaterThan(
			served.filter((route) => route.method !== "HEAD").length / 2,
		);
		for (const line of lines) {
			for (const secret of [tokens.callback, tokens.lookup, tokens.admin])
				expect(line).not.toContain(secret);
			// Nor an address: the callback's and every route's address is at example.com.
			expect(line).not.toMatch(/example\.com/i);
			const entry = JSON.parse(line) as { requestId?: unknown };
			expect(typeof entry.requestId === "string" || entry.requestId === undefined).toBe(true);
		}
		const requests = lines
			.map((line) => JSON.parse(line) as Record<string, unknown>)
			.filter((entry) => entry.message === "request");
		expect(
			requests.every((entry) => typeof entry.requestId === "string" && entry.requestId !== ""),
		).toBe(true);
	});
});
