import * as z from "zod/mini";
import { ApiError } from "./errors";

const MIN_TOKEN_LENGTH = 16;

/**
 * A setting's text. A TOML number or boolean in wrangler.toml reaches the Worker as one, not as a
 * string: the message says to quote it, and what the setting takes.
 */
function text(rule: string) {
	return z.string({ error: `${rule}, given as a string (quoted in wrangler.toml)` });
}

/** A comma-separated list of secrets; several at once so a token can be rotated without downtime. */
function tokenList(pattern: RegExp, charset: string) {
	return z.pipe(
		z._default(text(`must be comma-separated tokens of ${charset}`), ""),
		z.transform((raw, ctx) => {
			const tokens = raw
				.split(",")
				.map((token) => token.trim())
				.filter((token) => token !== "");
			for (const token of tokens) {
				if (token.length < MIN_TOKEN_LENGTH || !pattern.test(token)) {
					ctx.issues.push({
						code: "custom",
						input: "(secret)",
						message: `each token must be at least ${MIN_TOKEN_LENGTH} characters of ${charset}`,
					});
					return z.NEVER;
				}
			}
			return tokens;
		}),
	);
}

/**
 * An origin as a browser sends it in `Origin` (lower-case host, no default port, an IDN in
 * punycode), which is compared as a string; null for anything that is not just a scheme, a host
 * and a port. A wildcard, a path, a query or credentials would never equal a browser's origin.
 */
function parseOrigin(text: string): string | null {
	if (!/^https?:\/\/[^/\\?#@*\s]+$/i.test(text)) return null;
	try {
		return new URL(text).origin;
	} catch {
		return null;
	}
}

/** Comma-separated browser origins, each a scheme, a host and a port if not the default. */
function originList() {
	return z.pipe(
		z._default(text("must be comma-separated origins such as https://app.example.com"), ""),
		z.transform((raw, ctx) => {
			const origins: string[] = [];
			for (const text of raw.split(",")) {
				if (text.trim() === "") continue;
				const origin = parseOrigin(text.trim());
				if (origin === null) {
					ctx.issues.push({
						code: "custom",
						input: text,
						message:
							"each origin must look like https://app.example.com (a scheme, a host and a port if not the default; no path and no wildcard)",
					});
					return z.NEVER;
				}
				origins.push(origin);
			}
			return origins;
		}),
	);
}

/** An integer setting given as a string var, with a default and bounds; a bad value says them. */
function intSetting(fallback: number, min: number, max: number) {
	const rule = `must be a whole number from ${min} to ${max}`;
	return z.pipe(
		z._default(text(rule), String(fallback)),
		z.transform((raw: string, ctx) => {
			const value = /^\s*\d+\s*$/.test(raw) ? Number(raw) : Number.NaN;
			// NaN fails both comparisons.
			if (value >= min && value <= max) return value;
			ctx.issues.push({ code: "custom", input: raw, message: rule });
			return z.NEVER;
		}),
	);
}

const settingsSchema = z
	.object({
		// Callback tokens travel in the URL path, so only URL-safe characters.
		CALLBACK_TOKENS: tokenList(/^[A-Za-z0-9._~-]+$/, "A-Z a-z 0-9 . _ ~ -"),
		LOOKUP_TOKENS: tokenList(/^[\x21-\x2b\x2d-\x7e]+$/, "printable ASCII without commas"),
		ADMIN_TOKENS: tokenList(/^[\x21-\x2b\x2d-\x7e]+$/, "printable ASCII without commas"),
		MAX_EVENTS_PER_REQUEST: intSetting(100, 1, 1000),
		HARD_BOUNCE_SUPPRESS_DAYS: intSetting(0, 0, 36500),
		SOFT_BOUNCE_LIMIT: intSetting(3, 1, 100),
		SOFT_BOUNCE_WINDOW_DAYS: intSetting(14, 1, 365),
		SOFT_BOUNCE_SUPPRESS_DAYS: intSetting(14, 1, 36500),
		UNSUBSCRIBE_SCOPE: z._default(
			z.enum(["domain", "global"], { error: 'must be "domain" or "global"' }),
			"domain",
		),
		RECONCILE_BATCH_SIZE: intSetting(500, 1, 5000),
		EVENT_RETENTION_DAYS: intSetting(90, 1, 36500),
		REJECTED_RETENTION_DAYS: intSetting(30, 1, 36500),
		RETENTION_BATCH_SIZE: intSetting(1000, 1, 10000),
		// At most D1's 10 GB.
		MAX_REJECTED_MIB: intSetting(1024, 1, 9536),
		CORS_ORIGINS: originList(),
	})
	.check(
		z.superRefine((settings, ctx) => {
			// A secret in two lists would hold both roles: a callback token, which travels in the URL
			// (on plain HTTP, unencrypted), could read or write through the API, and a lookup token
			// that is also an admin token could write.
			const admin = new Set(settings.ADMIN_TOKENS);
			const bearer = new Set([...settings.LOOKUP_TOKENS, ...admin]);
			if (settings.CALLBACK_TOKENS.some((token) => bearer.has(token))) {
				ctx.addIssue({
					code: "custom",
					path: ["CALLBACK_TOKENS"],
					input: "(secret)",
					message: "must not repeat a token of LOOKUP_TOKENS or ADMIN_TOKENS",
				});
			}
			if (settings.LOOKUP_TOKENS.some((token) => admin.has(token))) {
				ctx.addIssue({
					code: "custom",
					path: ["LOOKUP_TOKENS"],
					input: "(secret)",
					message: "must not repeat a token of ADMIN_TOKENS",
				});
			}
			// Soft-bounce runs are read from stored events: they must still be there.
			if (settings.SOFT_BOUNCE_WINDOW_DAYS > settings.EVENT_RETENTION_DAYS) {
				ctx.addIssue({
					code: "custom",
					path: ["SOFT_BOUNCE_WINDOW_DAYS"],
					input: settings.SOFT_BOUNCE_WINDOW_DAYS,
					message: "must not exceed EVENT_RETENTION_DAYS",
				});
			}
		}),
	);

/** The suppression policy's knobs, in seconds and counts. */
export interface PolicySettings {
	/** 0: a hard bounce suppresses for ever. */
	hardBounceSuppressSeconds: number;
	softBounceLimit: number;
	softBounceWindowSeconds: number;
	softBounceSuppressSeconds: number;
	unsubscribeScope: "domain" | "global";
}

const DAY = 86_400;

/** Vars and secrets, parsed once per environment into typed settings. */
export interface Settings {
	callbackTokens: string[];
	lookupTokens: string[];
	adminTokens: string[];
	maxEventsPerRequest: number;
	policy: PolicySettings;
	/** Addresses the reconcile cron checks per run. */
	reconcileBatchSize: number;
	retention: { eventDays: number; rejectedDays: number; batchSize: number };
	/** Bytes refused callbacks may take in D1; past it a refusal is answered 503, not recorded. */
	maxRejectedBytes: number;
	/** Origins browsers may call the API from; none by default. */
	corsOrigins: string[];
}

const cache = new WeakMap<object, Settings>();

/**
 * Parses the Worker's vars and secrets. A bad value answers `503 not_configured` naming the
 * setting and what it takes (never its value, which may be a secret).
 *
 * @example
 * const { maxEventsPerRequest } = loadSettings(env);
 */
export function loadSettings(env: object): Settings {
	const cached = cache.get(env);
	if (cached) return cached;
	const parsed = settingsSchema.safeParse(env);
	if (!parsed.success) {
		const names = [...new Set(parsed.error.issues.map((issue) => String(issue.path[0])))];
		const details = parsed.error.issues.map(
			(issue) => `${String(issue.path[0])}: ${issue.message}`,
		);
		throw new ApiError(
			503,
			"not_configured",
			`Invalid setting ${names.join(", ")} (${details.join("; ")})`,
		);
	}
	const settings: Settings = {
		callbackTokens: parsed.data.CALLBACK_TOKENS,
		lookupTokens: parsed.data.LOOKUP_TOKENS,
		adminTokens: parsed.data.ADMIN_TOKENS,
		maxEventsPerRequest: parsed.data.MAX_EVENTS_PER_REQUEST,
		policy: {
			hardBounceSuppressSeconds: parsed.data.HARD_BOUNCE_SUPPRESS_DAYS * DAY,
			softBounceLimit: parsed.data.SOFT_BOUNCE_LIMIT,
			softBounceWindowSeconds: parsed.data.SOFT_BOUNCE_WINDOW_DAYS * DAY,
			softBounceSuppressSeconds: parsed.data.SOFT_BOUNCE_SUPPRESS_DAYS * DAY,
			unsubscribeScope: parsed.data.UNSUBSCRIBE_SCOPE,
		},
		reconcileBatchSize: parsed.data.RECONCILE_BATCH_SIZE,
		retention: {
			eventDays: parsed.data.EVENT_RETENTION_DAYS,
			rejectedDays: parsed.data.REJECTED_RETENTION_DAYS,
			batchSize: parsed.data.RETENTION_BATCH_SIZE,
		},
		maxRejectedBytes: parsed.data.MAX_REJECTED_MIB * 1024 * 1024,
		corsOrigins: parsed.data.CORS_ORIGINS,
	};
	cache.set(env, settings);
	return settings;
}

/** Throws `503 not_configured` naming `name` when a required token list is empty. */
export function requireTokens(tokens: string[], name: string): string[] {
	if (tokens.length === 0) {
		throw new ApiError(503, "not_configured", `${name} is not set`);
	}
	return tokens;
}
