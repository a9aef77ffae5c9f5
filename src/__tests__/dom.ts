/**
 * Rendering React components into a detached DOM for the tests, as React's own `act` expects.
 */
import type * as React from 'react';

export interface IRoot {
  render(node: React.ReactNode): void;
  unmount(): void;
}

// react-dom ships no type declarations here: the one function used is typed by hand.
declare const require: (id: string) => unknown;
export const { createRoot } = require('react-dom/client') as {
  createRoot: (container: Element) => IRoot;
};

(
  globalThis as { IS_REACT_ACT_ENVIRONMENT?: boolean }
).IS_REACT_ACT_ENVIRONMENT = true;
