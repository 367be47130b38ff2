// Preloaded into the jsii runtime's node process (NODE_OPTIONS=--require) by modules/fast_import.py.
// @cdktf/provider-aws's lib/index.js requires all ~2,200 resource modules at load (about 3.6 s);
// this turns each `exports.x = require("./x");` line into a getter that requires on first use.
// The kernel reaches types through these exports, so only the modules a stack uses get loaded.
"use strict";
const fs = require("fs");
const path = require("path");
const Module = require("module");

const PACKAGE_NAME = "@cdktf/provider-aws";
const EAGER_EXPORT = /^exports\.([A-Za-z0-9_$]+) = require\("(\.\/[A-Za-z0-9_-]+)"\);$/gm;
const originalCompile = Module.prototype._compile;

function isProviderIndex(filename) {
  if (path.basename(filename) !== "index.js" || path.basename(path.dirname(filename)) !== "lib") return false;
  try {
    const manifest = path.join(path.dirname(path.dirname(filename)), "package.json");
    return JSON.parse(fs.readFileSync(manifest, "utf8")).name === PACKAGE_NAME;
  } catch {
    return false;
  }
}

function lazyExport(_line, name, relative) {
  return `Object.defineProperty(exports, "${name}", { configurable: true, enumerable: true, get() {` +
    ` const value = require("${relative}");` +
    ` Object.defineProperty(exports, "${name}", { value, enumerable: true, writable: true }); return value; } });`;
}

Module.prototype._compile = function compileWithLazyProviderIndex(content, filename) {
  if (isProviderIndex(filename)) content = content.replace(EAGER_EXPORT, lazyExport);
  return originalCompile.call(this, content, filename);
};
