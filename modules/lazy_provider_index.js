// Preloaded into the jsii runtime's node process (NODE_OPTIONS=--require) by modules/fast_import.py.
// The AWS provider bindings' lib/index.js (@cdktf/provider-aws, or CDK Terrain's @cdktn/provider-aws)
// requires all ~2,200 resource modules at load (about 3.6 s). This turns each export line, CDKTF's
// `exports.x = require("./x");` or CDK Terrain's `exports.x = __importStar(require("./x/index"));`,
// into a getter that requires on first use.
// The kernel reaches types through these exports, so only the modules a stack uses get loaded.
"use strict";
const fs = require("fs");
const path = require("path");
const Module = require("module");

const PACKAGE_NAMES = new Set(["@cdktf/provider-aws", "@cdktn/provider-aws"]);
const MODULE_PATH = String.raw`"(\.\/[A-Za-z0-9_-]+(?:\/index)?)"`;
const EAGER_EXPORT = new RegExp(
  String.raw`^exports\.([A-Za-z0-9_$]+) = (?:require\(${MODULE_PATH}\)|__importStar\(require\(${MODULE_PATH}\)\));$`, "gm");
const originalCompile = Module.prototype._compile;

// Tests set this to a file path: each provider index made lazy appends "<package>@<version> <deferred exports>".
const TRACE_FILE = process.env.STEPFUNC_LAZY_INDEX_TRACE;

function providerManifest(filename) {
  if (path.basename(filename) !== "index.js" || path.basename(path.dirname(filename)) !== "lib") return null;
  try {
    const manifest = path.join(path.dirname(path.dirname(filename)), "package.json");
    const parsed = JSON.parse(fs.readFileSync(manifest, "utf8"));
    return PACKAGE_NAMES.has(parsed.name) ? parsed : null;
  } catch {
    return null;
  }
}

function lazyExport(_line, name, plain, starred) {
  // __importStar is the index's own helper (module scope), so the getter can call it too.
  const load = plain ? `require("${plain}")` : `__importStar(require("${starred}"))`;
  return `Object.defineProperty(exports, "${name}", { configurable: true, enumerable: true, get() {` +
    ` const value = ${load};` +
    ` Object.defineProperty(exports, "${name}", { value, enumerable: true, writable: true }); return value; } });`;
}

Module.prototype._compile = function compileWithLazyProviderIndex(content, filename) {
  const manifest = providerManifest(filename);
  if (manifest) {
    let deferred = 0;
    content = content.replace(EAGER_EXPORT, (...match) => { deferred += 1; return lazyExport(...match); });
    if (TRACE_FILE) fs.appendFileSync(TRACE_FILE, `${manifest.name}@${manifest.version} ${deferred}\n`);
  }
  return originalCompile.call(this, content, filename);
};
