/** @type {import('jest').Config} */
module.exports = {
  testEnvironment: "node",
  roots: ["<rootDir>/test"],
  testMatch: ["**/*.test.ts"],
  transform: {
    "^.+\\.ts$": ["ts-jest", { tsconfig: "tsconfig.json" }],
    // firebase-admin's token verification requires `jose`, which ships ES modules only: Node 24
    // loads them with require(), but Jest's module system does not, so Jest gets a CommonJS copy.
    "/node_modules/jose/.+\\.js$": ["ts-jest", { tsconfig: { allowJs: true, module: "commonjs", target: "es2022", isolatedModules: true } }],
  },
  transformIgnorePatterns: ["/node_modules/(?!jose/)"],
  globalSetup: "<rootDir>/test/support/global-setup.ts",
  testTimeout: 20000,
  // Suites that start servers and database clients share two cores with the rest.
  maxWorkers: 2,
};
