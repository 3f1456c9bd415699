/** The part of package-lock.json (lockfileVersion 2 or 3) the check reads. */
export interface Lockfile {
	packages?: Record<
		string,
		{ optionalDependencies?: Record<string, string>; [field: string]: unknown }
	>;
}
/** Optional dependencies the lockfile names but does not hold, as "package -> dependency" lines. */
export declare function missingPlatformBuilds(lock: Lockfile): string[];
