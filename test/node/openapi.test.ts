import { Validator } from "@seriousme/openapi-schema-validator";
import { describe, expect, it } from "vitest";
import { openApiDocument } from "../../src/openapi";
import { router } from "../../src/router";
import { ROUTES } from "../../src/routes";

type Operation = {
	security?: unknown[];
	responses: Record<string, unknown>;
	parameters?: Array<{ name: string; in: string }>;
};
const document = JSON.parse(JSON.stringify(openApiDocument())) as {
	openapi: string;
	paths: Record<string, Record<string, Operation>>;
};

function operations(): Array<[string, string, Operation]> {
	return Object.entries(document.paths).flatMap(([path, methods]) =>
		Object.entries(methods).map(([method, operation]): [string, string, Operation] => [
			method.toUpperCase(),
			path,
			operation,
		]),
	);
}

describe("GET /openapi.json", () => {
	it("is a valid OpenAPI 3.1 document", async () => {
		const validator = new Validator();
		const result = await validator.validate(document);
		expect(result.errors ?? []).toEqual([]);
		expect(result.valid).toBe(true);
		expect(validator.version).toBe("3.1");
	});

	it("names every route the router serves, and nothing else", () => {
		const documented = operations()
			.map(([method, path]) => `${method} ${path}`)
			.sort();
		// HEAD on a GET path is implied (RFC 9110) and not documented, unless the route table
		// lists it itself.
		const served = router.routes
			.filter(([method]) => method !== "ALL")
			.map(([method, , , path]) => `${method} ${(path ?? "").replace(/:(\w+)/g, "{$1}")}`)
			.filter(
				(route) =>
					!route.startsWith("HEAD ") ||
					documented.includes(route) ||
					!documented.includes(route.replace("HEAD ", "GET ")),
			)
			.sort();
		expect(documented).toEqual(served);
		expect(served).toHaveLength(ROUTES.length);
	});

	it("states the auth of every route and the errors it answers", () => {
		for (const [method, path, operation] of operations()) {
			const route = ROUTES.find(
				(r) => r.method === method && r.path.replace(/:(\w+)/g, "{$1}") === path,
			);
			expect(route, `${method} ${path}`).toBeDefined();
			const statuses = Object.keys(operation.responses);
			expect(statuses).toContain("200");
			expect(statuses).toContain("500");
			if (route?.access === "read" || route?.access === "admin") {
				expect(operation.security).toEqual([
					{ [route.access === "read" ? "lookupToken" : "adminToken"]: [] },
				]);
				expect(statuses).toContain("401");
			}
			if (route?.access === "admin") expect(statuses).toContain("403");
			if (route?.access === "callback") expect(statuses).toContain("404");
		}
	});

	it("says a wrong callback token answers 404 only of the callback's own 404", () => {
		for (const [method, path, operation] of operations()) {
			const notFound = operation.responses["404"] as { description: string } | undefined;
			if (!notFound) continue;
			expect(notFound.description.includes("callback token"), `${method} ${path}`).toBe(
				path.startsWith("/v1/callbacks/"),
			);
		}
		const replay = document.paths["/v1/rejected/{id}/replay"]?.post;
		expect(replay?.responses["404"]).toMatchObject({ description: "Not found (`not_found`)" });
	});

	it("documents query parameters from the zod schemas that validate them", () => {
		const events = document.paths["/v1/events"]?.get;
		expect(events?.parameters?.map((p) => p.name).sort()).toEqual(
			[
				"bulkId",
				"cursor",
				"email",
				"event",
				"fromDomain",
				"limit",
				"messageId",
				"since",
				"until",
			].sort(),
		);
		const lookup = document.paths["/v1/suppressions/{email}"]?.get;
		expect(lookup?.parameters).toEqual(
			expect.arrayContaining([
				expect.objectContaining({ name: "email", in: "path" }),
				expect.objectContaining({ name: "fromDomain", in: "query" }),
			]),
		);
		expect(events?.parameters).toEqual(
			expect.arrayContaining([
				expect.objectContaining({
					name: "limit",
					description: "Page size, 1 to 1000 (default 100)",
				}),
				expect.objectContaining({
					name: "until",
					description: expect.stringMatching(/^Before this time, exclusive/),
				}),
			]),
		);
	});

	it("documents the headers answers carry, and no body for HEAD", () => {
		for (const [, , operation] of operations()) {
			for (const [status, response] of Object.entries(operation.responses)) {
				const { headers, description } = response as {
					headers: Record<string, unknown>;
					description: string;
				};
				expect(Object.keys(headers)).toContain("X-Request-Id");
				if (status === "401") expect(Object.keys(headers)).toContain("WWW-Authenticate");
				// Retry-After comes with storage_unavailable only, never with not_configured alone.
				if (status === "503") {
					expect("Retry-After" in headers).toBe(description.includes("storage_unavailable"));
				}
			}
		}
		const probe = document.paths["/v1/callbacks/tencent/{token}"]?.head;
		expect(Object.values(probe?.responses ?? {}).every((r) => !("content" in (r as object)))).toBe(
			true,
		);
	});
});
