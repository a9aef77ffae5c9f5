const jestJupyterLab = require('@jupyterlab/testutils/lib/jest-config');

const esModules = [
  '@codemirror',
  '@jupyter/',
  '@jupyterlab/',
  '@marijn',
  '@microsoft',
  'color',
  'exenv-es6',
  'lib0',
  'marked',
  'nanoid',
  'vscode-ws-jsonrpc',
  'y-protocols',
  'y-websocket',
  'yjs'
].join('|');

const baseConfig = jestJupyterLab(__dirname);

module.exports = {
  ...baseConfig,
  automock: false,
  roots: ['<rootDir>/src'],
  modulePathIgnorePatterns: [
    '<rootDir>/.venv/',
    '<rootDir>/lib/',
    '<rootDir>/jupyter_compute/'
  ],
  reporters: ['default'],
  collectCoverageFrom: ['src/**/*.{ts,tsx}', '!src/**/*.d.ts'],
  coverageReporters: ['text-summary'],
  testRegex: 'src/.*/.*.spec.ts[x]?$',
  transform: {
    ...baseConfig.transform,
    '^.+\\.tsx?$': [
      'ts-jest/legacy',
      { tsconfig: './tsconfig.json', diagnostics: { warnOnly: false } }
    ]
  },
  transformIgnorePatterns: [`/node_modules/(?!${esModules}).+`]
};
