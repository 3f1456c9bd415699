// Whether package-lock.json can install on every platform, as a pure function so it can be tested.
//
// Packages such as workerd, esbuild and Biome ship their binary as optional dependencies, one per
// platform. When `npm install` updates the lockfile and the registry has no build of the new
// version for some platform, npm leaves that build out without a word, and `npm ci` on that
// platform then fails, or installs a package with no binary. The check refuses such a lockfile.

/**
 * The optional dependencies named by a package in the lockfile (lockfileVersion 2 or 3) that the
 * lockfile does not hold where Node would find them, as "package -> dependency" lines.
 */
export function missingPlatformBuilds(lock) {
	const packages = lock.packages ?? {};
	const missing = [];
	for (const [path, meta] of Object.entries(packages)) {
		for (const name of Object.keys(meta.optionalDependencies ?? {})) {
			if (!resolves(packages, path, name)) missing.push(`${path || "(root)"} -> ${name}`);
		}
	}
	return missing;
}

/** Whether `name` is installed in `path`'s own node_modules or in one of its ancestors'. */
function resolves(packages, path, name) {
	let base = path;
	for (;;) {
		if (packages[`${base ? `${base}/` : ""}node_modules/${name}`]) return true;
		if (!base) return false;
		const parent = base.lastIndexOf("/node_modules/");
		base = parent < 0 ? "" : base.slice(0, parent);
	}
}
