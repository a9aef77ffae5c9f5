/**
 * Checks that no module of src/ imports itself through others, type-only imports included:
 * a cycle makes the order modules are evaluated in depend on which one is loaded first.
 */
/// <reference types="node" />
import * as fs from 'fs';
import * as path from 'path';

const SRC = path.resolve(__dirname, '..');

/** `import … from './x'`, `export … from './x'` and `import type …`, up to the first `;`. */
const STATIC_IMPORT =
  /^[ \t]*(?:import|export)\b[^;]*?\bfrom\s*(['"])(\.{1,2}\/[^'"]*)\1/gm;
/** `import './x'`, for its side effects. */
const BARE_IMPORT = /^[ \t]*import\s*(['"])(\.{1,2}\/[^'"]*)\1/gm;
/** `import('./x')` and `require('./x')`, wherever they are. */
const CALL_IMPORT =
  /\b(?:import|require)\s*\(\s*(['"])(\.{1,2}\/[^'"]*)\1\s*\)/g;

/** Block comments, and line comments that do not follow a `:` as in `https://`. */
const COMMENTS = /\/\*[\s\S]*?\*\/|(^|[^:\\])\/\/[^\n]*/g;

/** Extensions a specifier may leave out, in the order TypeScript tries them. */
const RESOLVED = ['.ts', '.tsx', '.d.ts', '/index.ts', '/index.tsx'];

type Graph = Map<string, string[]>;

/** The modules of `dir`, leaving out this file, whose examples only look like imports. */
function sourceFiles(dir: string): string[] {
  const files: string[] = [];
  for (const entry of fs.readdirSync(dir, { withFileTypes: true })) {
    const full = path.join(dir, entry.name);
    if (entry.isDirectory()) {
      files.push(...sourceFiles(full));
    } else if (/\.tsx?$/.test(entry.name) && full !== __filename) {
      files.push(full);
    }
  }
  return files.sort();
}

/** The relative specifiers a module imports, in the order they appear. */
function relativeImports(source: string): string[] {
  const text = source.replace(COMMENTS, (_, before) => before ?? '');
  const specifiers: string[] = [];
  for (const pattern of [STATIC_IMPORT, BARE_IMPORT, CALL_IMPORT]) {
    pattern.lastIndex = 0;
    let match: RegExpExecArray | null;
    while ((match = pattern.exec(text)) !== null) {
      specifiers.push(match[2]);
    }
  }
  return specifiers;
}

/** The file a relative specifier names, or null when there is none. */
function resolve(from: string, specifier: string): string | null {
  const base = path.resolve(path.dirname(from), specifier);
  if (fs.existsSync(base) && fs.statSync(base).isFile()) {
    return base;
  }
  for (const ending of RESOLVED) {
    if (fs.existsSync(base + ending)) {
      return base + ending;
    }
  }
  return null;
}

function importGraph(files: string[]): {
  graph: Graph;
  unresolved: string[];
} {
  const graph: Graph = new Map();
  const unresolved: string[] = [];
  for (const file of files) {
    const edges = new Set<string>();
    for (const specifier of relativeImports(fs.readFileSync(file, 'utf8'))) {
      const target = resolve(file, specifier);
      if (target === null) {
        unresolved.push(`${path.relative(SRC, file)}: '${specifier}'`);
      } else if (/\.tsx?$/.test(target)) {
        edges.add(target);
      }
    }
    graph.set(file, Array.from(edges));
  }
  return { graph, unresolved };
}

/**
 * Every cycle reachable in the graph, one per back edge a depth-first walk meets, each
 * given as the path that closes on its first node.
 */
function findCycles(graph: Graph): string[][] {
  const cycles: string[][] = [];
  const done = new Set<string>();
  const stack: string[] = [];
  const onStack = new Set<string>();
  const visit = (node: string): void => {
    stack.push(node);
    onStack.add(node);
    for (const next of graph.get(node) ?? []) {
      if (onStack.has(next)) {
        cycles.push([...stack.slice(stack.indexOf(next)), next]);
      } else if (!done.has(next)) {
        visit(next);
      }
    }
    stack.pop();
    onStack.delete(node);
    done.add(node);
  };
  for (const node of graph.keys()) {
    if (!done.has(node)) {
      visit(node);
    }
  }
  return cycles;
}

describe('imports', () => {
  const files = sourceFiles(SRC);
  const { graph, unresolved } = importGraph(files);

  it('reads every kind of relative import', () => {
    expect(
      relativeImports(
        [
          "import { a } from './a';",
          'import type {',
          '  B',
          "} from '../b';",
          "export { c } from './c';",
          "export * from './d';",
          "import './e.css';",
          "const f = require('./f');",
          "const g = await import('./g');",
          "import { h } from '@scope/h';",
          "// import { i } from './i';",
          "/* require('./j') */ const k = 'https://example.org/'; // import('./l')"
        ].join('\n')
      ).sort()
    ).toEqual(['../b', './a', './c', './d', './e.css', './f', './g']);
  });

  it('finds a cycle, and only a cycle', () => {
    const graph: Graph = new Map([
      ['a', ['b']],
      ['b', ['c']],
      ['c', ['a', 'd']],
      ['d', []]
    ]);
    expect(findCycles(graph)).toEqual([['a', 'b', 'c', 'a']]);
    graph.set('c', ['d']);
    expect(findCycles(graph)).toEqual([]);
  });

  it('resolves every relative import of src/', () => {
    expect(files.length).toBeGreaterThan(10);
    expect(unresolved).toEqual([]);
    const edges = Array.from(graph.values()).reduce((n, e) => n + e.length, 0);
    expect(edges).toBeGreaterThan(files.length);
  });

  it('has no import cycle in src/', () => {
    const cycles = findCycles(graph).map(cycle =>
      cycle.map(file => path.relative(SRC, file)).join(' → ')
    );
    if (cycles.length > 0) {
      console.error(`Import cycles in src/:\n  ${cycles.join('\n  ')}`);
    }
    expect(cycles).toEqual([]);
  });
});
