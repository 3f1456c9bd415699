import { describe, expect, it } from "vitest";
import { loadSettings, requireTokens } from "../../src/config";
import { ApiError } from "../../src/errors";

const GOOD = "abcdefghijklmnop"; // exactly 16 characters
const CALLBACK_RULE = "each token must be at least 16 characters of A-Z a-z 0-9 . _ ~ -";
const PRINTABLE_RULE =
	"each token must be at least 16 characters of printable ASCII without commas";

const DAY = 86_400;
const POLICY_DEFAULTS = {
	policy: {
		hardBounceSuppressSeconds: 0,
		softBounceLimit: 3,
		softBounceWindowSeconds: 14 * DAY,
		softBounceSuppressSeconds: 14 * DAY,
		unsubscribeScope: "domain",
	},
	reconcileBatchSize: 500,
	retention: { eventDays: 90, rejectedDays: 30, batchSize: 1000 },
	maxRejectedBytes: 1024 * 1024 * 1024,
	corsOrigins: [],
};

/** The ApiError that `fn` throws. */
function thrown(fn: () => unknown): ApiError {
	try {
		fn();
	} catch (error) {
		expect(error).toBeInstanceOf(ApiError);
		return error as ApiError;
	}
	throw new Error("expected an ApiError, nothing was thrown");
}

describe("loadSettings", () => {
	it("defaults to no tokens and 100 events per request", () => {
		expect(loadSettings({})).toEqual({
			callbackTokens: [],
			lookupTokens: [],
			adminTokens: [],
			maxEventsPerRequest: 100,
			...POLICY_DEFAULTS,
		});
	});

	it("ignores unrelated bindings", () => {
		expect(loadSettings({ DB: {}, OTHER: 5, LOOKUP_TOKENS: GOOD })).toEqual({
			callbackTokens: [],
			lookupTokens: [GOOD],
			adminTokens: [],
			maxEventsPerRequest: 100,
			...POLICY_DEFAULTS,
		});
	});

	it("splits comma-separated tokens, trims them and drops empty entries", () => {
		const settings = loadSettings({
			CALLBACK_TOKENS: ` ${GOOD} ,, cb-token_0123.456~ ,`,
			LOOKUP_TOKENS: "lookup!#$%&'()*+-/:;<=>?@[]^`{|}~0",
			ADMIN_TOKENS: "\tadmin-token-00001\n,\n admin-token-00002 ",
		});
		expect(settings.callbackTokens).toEqual([GOOD, "cb-token_0123.456~"]);
		expect(settings.lookupTokens).toEqual(["lookup!#$%&'()*+-/:;<=>?@[]^`{|}~0"]);
		expect(settings.adminTokens).toEqual(["admin-token-00001", "admin-token-00002"]);
	});

	it("gives an empty list for an empty or blank setting", () => {
		const settings = loadSettings({
			CALLBACK_TOKENS: "",
			LOOKUP_TOKENS: " , ,",
			ADMIN_TOKENS: " ",
		});
		expect(settings.callbackTokens).toEqual([]);
		expect(settings.lookupTokens).toEqual([]);
		expect(settings.adminTokens).toEqual([]);
	});

	it.each([
		["CALLBACK_TOKENS", "short-token-15c", CALLBACK_RULE],
		["CALLBACK_TOKENS", "has/slash/in/it/0", CALLBACK_RULE],
		["CALLBACK_TOKENS", "has+plus+in+it+00", CALLBACK_RULE],
		["CALLBACK_TOKENS", "has space in it 00", CALLBACK_RULE],
		["CALLBACK_TOKENS", "nön-ascii-token-00", CALLBACK_RULE],
		["LOOKUP_TOKENS", "short-token-15c", PRINTABLE_RULE],
		["LOOKUP_TOKENS", "has space in it 00", PRINTABLE_RULE],
		["LOOKUP_TOKENS", "tab\tinside-token-00", PRINTABLE_RULE],
		["LOOKUP_TOKENS", "nön-ascii-token-00", PRINTABLE_RULE],
		["LOOKUP_TOKENS", "del\u007finside-token-00", PRINTABLE_RULE],
		["ADMIN_TOKENS", "short-token-15c", PRINTABLE_RULE],
		["ADMIN_TOKENS", "has space in it 00", PRINTABLE_RULE],
	])(
		"refuses %s = %j with 503 not_configured, naming the setting but not the token",
		(name, token, rule) => {
			const env = { [name]: `${GOOD},${token}` };
			const error = thrown(() => loadSettings(env));
			expect(error.status).toBe(503);
			expect(error.code).toBe("not_configured");
			expect(error.message).toBe(`Invalid setting ${name} (${name}: ${rule})`);
			expect(error.message).not.toContain(token);
			expect(error.message).not.toContain(token.trim());
			expect(error.message).not.toContain(GOOD);
			expect(error.issues).toBeUndefined();
		},
	);

	it("accepts a token of exactly 16 characters and refuses 15", () => {
		expect(loadSettings({ ADMIN_TOKENS: "a".repeat(16) }).adminTokens).toEqual(["a".repeat(16)]);
		const error = thrown(() => loadSettings({ ADMIN_TOKENS: "a".repeat(15) }));
		expect(error.message).toBe(`Invalid setting ADMIN_TOKENS (ADMIN_TOKENS: ${PRINTABLE_RULE})`);
	});

	it("refuses a non-string token setting without showing it", () => {
		const error = thrown(() => loadSettings({ LOOKUP_TOKENS: 1234567890123456 }));
		expect(error.status).toBe(503);
		expect(error.code).toBe("not_configured");
		expect(error.message.startsWith("Invalid setting LOOKUP_TOKENS (LOOKUP_TOKENS: ")).toBe(true);
		expect(error.message).not.toContain("123456789");
	});

	it("names every bad setting once", () => {
		const error = thrown(() =>
			loadSettings({
				CALLBACK_TOKENS: "short",
				LOOKUP_TOKENS: GOOD,
				ADMIN_TOKENS: "also short",
				MAX_EVENTS_PER_REQUEST: "0",
			}),
		);
		expect(error.status).toBe(503);
		expect(error.code).toBe("not_configured");
		expect(
			error.message.startsWith(
				"Invalid setting CALLBACK_TOKENS, ADMIN_TOKENS, MAX_EVENTS_PER_REQUEST (",
			),
		).toBe(true);
		expect(error.message).toContain(`CALLBACK_TOKENS: ${CALLBACK_RULE}; `);
		expect(error.message).toContain(`ADMIN_TOKENS: ${PRINTABLE_RULE}; `);
		expect(error.message).toContain("MAX_EVENTS_PER_REQUEST: ");
		expect(error.message).not.toContain("LOOKUP_TOKENS");
		expect(error.message).not.toContain("short");
	});

	it.each([
		["1", 1],
		["100", 100],
		["1000", 1000],
		[" 250 ", 250],
		["0042", 42],
	])("accepts MAX_EVENTS_PER_REQUEST = %j", (raw, value) => {
		expect(loadSettings({ MAX_EVENTS_PER_REQUEST: raw }).maxEventsPerRequest).toBe(value);
	});

	it.each([
		"0",
		"1001",
		"99999999999999999999",
		"-1",
		"1.5",
		"1e3",
		"0x10",
		"ten",
		"",
		" ",
		"10 0",
	])("refuses MAX_EVENTS_PER_REQUEST = %j", (raw) => {
		const error = thrown(() => loadSettings({ MAX_EVENTS_PER_REQUEST: raw }));
		expect(error.status).toBe(503);
		expect(error.code).toBe("not_configured");
		expect(error.message).toBe(
			"Invalid setting MAX_EVENTS_PER_REQUEST (MAX_EVENTS_PER_REQUEST: must be a whole number from 1 to 1000)",
		);
	});

	it("says what a setting takes when wrangler.toml gives it unquoted", () => {
		// `MAX_EVENTS_PER_REQUEST = 100` in [vars] reaches the Worker as a number.
		expect(thrown(() => loadSettings({ MAX_EVENTS_PER_REQUEST: 100 })).message).toBe(
			"Invalid setting MAX_EVENTS_PER_REQUEST (MAX_EVENTS_PER_REQUEST: must be a whole number from 1 to 1000, given as a string (quoted in wrangler.toml))",
		);
		expect(thrown(() => loadSettings({ CORS_ORIGINS: true })).message).toBe(
			"Invalid setting CORS_ORIGINS (CORS_ORIGINS: must be comma-separated origins such as https://app.example.com, given as a string (quoted in wrangler.toml))",
		);
	});

	it("caches the settings per env object", () => {
		const env = { LOOKUP_TOKENS: GOOD, MAX_EVENTS_PER_REQUEST: "7" };
		const first = loadSettings(env);
		expect(loadSettings(env)).toBe(first);
		// The cache is keyed by identity: a later change to the same object is not seen...
		env.MAX_EVENTS_PER_REQUEST = "8";
		expect(loadSettings(env).maxEventsPerRequest).toBe(7);
		// ...and an equal but different object is parsed anew.
		const copy = { LOOKUP_TOKENS: GOOD, MAX_EVENTS_PER_REQUEST: "7" };
		const second = loadSettings(copy);
		expect(second).not.toBe(first);
		expect(second).toEqual(first);
	});

	it("does not cache a failure", () => {
		const env = { MAX_EVENTS_PER_REQUEST: "0" };
		expect(thrown(() => loadSettings(env)).code).toBe("not_configured");
		env.MAX_EVENTS_PER_REQUEST = "5";
		expect(loadSettings(env).maxEventsPerRequest).toBe(5);
	});
});

describe("requireTokens", () => {
	it("returns a non-empty list as it is", () => {
		const tokens = [GOOD, "another-token-0001"];
		expect(requireTokens(tokens, "LOOKUP_TOKENS")).toBe(tokens);
	});

	it("refuses an empty list with 503 not_configured naming the setting", () => {
		const error = thrown(() => requireTokens([], "CALLBACK_TOKENS"));
		expect(error.status).toBe(503);
		expect(error.code).toBe("not_configured");
		expect(error.message).toBe("CALLBACK_TOKENS is not set");
		expect(error.issues).toBeUndefined();
	});

	it("works on what loadSettings gives for a missing setting", () => {
		const error = thrown(() => requireTokens(loadSettings({}).adminTokens, "ADMIN_TOKENS"));
		expect(error.message).toBe("ADMIN_TOKENS is not set");
	});
});

describe("suppression policy settings", () => {
	it("reads days as seconds and the unsubscribe scope", () => {
		const settings = loadSettings({
			HARD_BOUNCE_SUPPRESS_DAYS: "30",
			SOFT_BOUNCE_LIMIT: "5",
			SOFT_BOUNCE_WINDOW_DAYS: "7",
			SOFT_BOUNCE_SUPPRESS_DAYS: "2",
			UNSUBSCRIBE_SCOPE: "global",
			RECONCILE_BATCH_SIZE: "50",
		});
		expect(settings.policy).toEqual({
			hardBounceSuppressSeconds: 30 * DAY,
			softBounceLimit: 5,
			softBounceWindowSeconds: 7 * DAY,
			softBounceSuppressSeconds: 2 * DAY,
			unsubscribeScope: "global",
		});
		expect(settings.reconcileBatchSize).toBe(50);
	});

	it.each([
		["SOFT_BOUNCE_LIMIT", "0"],
		["SOFT_BOUNCE_WINDOW_DAYS", "-1"],
		["SOFT_BOUNCE_SUPPRESS_DAYS", "0"],
		["HARD_BOUNCE_SUPPRESS_DAYS", "soon"],
		["UNSUBSCRIBE_SCOPE", "sender"],
		["RECONCILE_BATCH_SIZE", "0"],
	])("a bad %s answers 503 naming it", (name, value) => {
		const error = thrown(() => loadSettings({ [name]: value }));
		expect(error.status).toBe(503);
		expect(error.code).toBe("not_configured");
		expect(error.message).toContain(name);
	});

	it.each([
		["SOFT_BOUNCE_LIMIT", "0", "must be a whole number from 1 to 100"],
		["HARD_BOUNCE_SUPPRESS_DAYS", "36501", "must be a whole number from 0 to 36500"],
		["RECONCILE_BATCH_SIZE", "5e2", "must be a whole number from 1 to 5000"],
		["UNSUBSCRIBE_SCOPE", "Global", 'must be "domain" or "global"'],
	])("a bad %s says what it takes", (name, value, rule) => {
		expect(thrown(() => loadSettings({ [name]: value })).message).toBe(
			`Invalid setting ${name} (${name}: ${rule})`,
		);
	});
});

describe("retention settings", () => {
	it("reads EVENT_RETENTION_DAYS, REJECTED_RETENTION_DAYS and RETENTION_BATCH_SIZE", () => {
		const settings = loadSettings({
			EVENT_RETENTION_DAYS: "30",
			REJECTED_RETENTION_DAYS: "7",
			RETENTION_BATCH_SIZE: "50",
		});
		expect(settings.retention).toEqual({ eventDays: 30, rejectedDays: 7, batchSize: 50 });
	});

	it("reads MAX_REJECTED_MIB in MiB, from 1 to 9536 (D1's 10 GB)", () => {
		expect(loadSettings({ MAX_REJECTED_MIB: "3" }).maxRejectedBytes).toBe(3 * 1024 * 1024);
		expect(loadSettings({ MAX_REJECTED_MIB: "9536" }).maxRejectedBytes).toBeLessThan(10e9);
		for (const bad of ["0", "9537", "1.5", "lots"]) {
			expect(thrown(() => loadSettings({ MAX_REJECTED_MIB: bad })).message).toContain(
				"MAX_REJECTED_MIB",
			);
		}
	});

	it("accepts a soft-bounce window as long as event retention", () => {
		const settings = loadSettings({ EVENT_RETENTION_DAYS: "14", SOFT_BOUNCE_WINDOW_DAYS: "14" });
		expect(settings.policy.softBounceWindowSeconds).toBe(14 * DAY);
	});

	it("reads CORS_ORIGINS as a scheme and a host each, refusing one with a path", () => {
		expect(
			loadSettings({ CORS_ORIGINS: " https://app.example.com ,http://localhost:5173" }).corsOrigins,
		).toEqual(["https://app.example.com", "http://localhost:5173"]);
		for (const bad of [
			"https://app.example.com/",
			"https://app.example.com/admin",
			"app.example.com",
			// None of these could ever equal the Origin a browser sends.
			"https://*.example.com",
			"https://app.example.com?x=1",
			"https://app.example.com#top",
			"https://user:pass@app.example.com",
			"https://app.example.com\\admin",
			"https://app.example.com:99999",
		]) {
			expect(thrown(() => loadSettings({ CORS_ORIGINS: bad })).message).toContain("CORS_ORIGINS");
		}
	});

	it("reads each origin as a browser sends it: lower-case host, no default port, IDN in punycode", () => {
		expect(
			loadSettings({
				CORS_ORIGINS:
					"HTTPS://Ops.Example.COM:443, http://localhost:80, https://bücher.example:8443",
			}).corsOrigins,
		).toEqual([
			"https://ops.example.com",
			"http://localhost",
			"https://xn--bcher-kva.example:8443",
		]);
	});

	it("refuses a soft-bounce window longer than event retention", () => {
		const error = thrown(() =>
			loadSettings({ EVENT_RETENTION_DAYS: "10", SOFT_BOUNCE_WINDOW_DAYS: "14" }),
		);
		expect(error.status).toBe(503);
		expect(error.message).toContain("SOFT_BOUNCE_WINDOW_DAYS");
		expect(error.message).toContain("must not exceed EVENT_RETENTION_DAYS");
	});
});
