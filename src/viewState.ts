/**
 * What the person chose about how the sidebar shows the targets: the selected target, the
 * name filter and the collapsed family groups. None of it comes from the server.
 */

export class ViewState {
  constructor(options: ViewState.IOptions = {}) {
    for (const family of options.collapsed ?? []) {
      this._collapsed.add(family);
    }
  }

  /** The selected target's name, which the start/stop commands act on. */
  get selected(): string | null {
    return this._selected;
  }

  /**
   * Select a target, or none; answers whether the selection changed. Nothing is signalled
   * here: the model tells of its changes once, including those that also deselect.
   */
  select(name: string | null): boolean {
    if (name === this._selected) {
      return false;
    }
    this._selected = name;
    return true;
  }

  /** Text that target names must contain to be listed; empty lists all. */
  get filter(): string {
    return this._filter;
  }

  /** Answers whether the filter changed. */
  setFilter(value: string): boolean {
    if (value === this._filter) {
      return false;
    }
    this._filter = value;
    this._needle = value.trim().toLowerCase();
    return true;
  }

  /** Whether the filter leaves some targets out; groups left empty by it are then hidden. */
  get isFiltering(): boolean {
    return this._needle !== '';
  }

  /** Whether a target of this name is listed under the filter, which ignores case. */
  matches(name: string): boolean {
    return !this._needle || name.toLowerCase().includes(this._needle);
  }

  isCollapsed(family: string): boolean {
    return this._collapsed.has(family);
  }

  /** Answers whether the group's state changed. */
  setCollapsed(family: string, collapsed: boolean): boolean {
    if (collapsed === this._collapsed.has(family)) {
      return false;
    }
    if (collapsed) {
      this._collapsed.add(family);
    } else {
      this._collapsed.delete(family);
    }
    return true;
  }

  private _selected: string | null = null;
  private _filter = '';
  private _needle = '';
  private _collapsed = new Set<string>();
}

export namespace ViewState {
  export interface IOptions {
    /** Families whose group starts collapsed. */
    collapsed?: readonly string[];
  }
}
