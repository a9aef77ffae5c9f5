/// <reference types="node" />
import * as fs from 'fs';
import * as path from 'path';

import { ROUTE_EXPRESSION, parseRouteAnswer, routeCode } from '../route';

const PACKAGE = path.resolve(__dirname, '..', '..');

describe('what the picker asks the kernel', () => {
  it('names the module and function the magics live in', () => {
    const match = /modules\['([\w.]+)'\]\.(\w+)\(\)/.exec(ROUTE_EXPRESSION);
    expect(match).not.toBeNull();
    const [, module, fn] = match!;
    const file = path.join(PACKAGE, ...module.split('.')) + '.py';
    expect(fs.existsSync(file)).toBe(true);
    expect(fs.readFileSync(file, 'utf8')).toMatch(
      new RegExp(`^def ${fn}\\(`, 'm')
    );
  });

  it('reads the answer, and refuses names it could not send back', () => {
    const ok = (text: string) => ({
      status: 'ok',
      data: { 'text/plain': text }
    });
    expect(parseRouteAnswer(ok("'k1'"))).toBe('k1');
    expect(parseRouteAnswer(ok("'local'"))).toBe('local');
    expect(parseRouteAnswer(ok("'a b'"))).toBeNull();
    expect(parseRouteAnswer({ status: 'error' })).toBeNull();
    expect(routeCode('k1', 'local')).toBe(
      '%compute use k1 --routed-by toolbar'
    );
    expect(routeCode('k1', 'ws2')).toBe(
      '%compute use k1 --workspace ws2 --routed-by toolbar'
    );
    expect(() => routeCode('k1; rm', 'local')).toThrow();
  });
});
