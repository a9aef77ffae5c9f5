/**
 * The targets, grouped by family, in a virtualised list: only the rows in view (and a few
 * around them) are in the DOM, so a thousand targets scroll as smoothly as ten.
 */
import {
  caretDownIcon,
  caretRightIcon,
  infoIcon,
  settingsIcon
} from '@jupyterlab/ui-components';
import * as React from 'react';

import type { IKind, ITarget } from '../api';
import type { ComputeController } from '../controller';
import type { ComputeModel, ITargetOperation } from '../model';
import {
  formatIdleShutdown,
  formatLoad,
  formatNodes,
  formatSize,
  isTransitional
} from '../state';
import { ApplicationLinks } from './ApplicationLinks';
import { ActionButtons, StateBadge } from './common';
import { formatWorkers, scaleFields, showScaleDialog } from './ScaleControl';
import { SSH_KIND, sshAddress } from './SshAttach';

/** The family whose targets' nodes are Dask workers. */
const CLUSTERS_FAMILY = 'Clusters';

export const GROUP_HEIGHT = 30;
export const ROW_HEIGHT = 52;
export const EMPTY_HEIGHT = 34;
const OVERSCAN_PX = 300;

type Item =
  | { type: 'group'; family: string; count: number; collapsed: boolean }
  | { type: 'empty'; family: string; kinds: IKind[] }
  | { type: 'target'; target: ITarget; family: string };

function heightOf(item: Item): number {
  return item.type === 'group'
    ? GROUP_HEIGHT
    : item.type === 'empty'
      ? EMPTY_HEIGHT
      : ROW_HEIGHT;
}

function keyOf(item: Item): string {
  return item.type === 'target'
    ? `t:${item.target.name}`
    : `${item.type}:${item.family}`;
}

export interface ITargetListProps {
  model: ComputeModel;
  controller: ComputeController;
  /** The model's version; a new value means the list must be read again. */
  version: number;
  now: number;
  /** Grows each time focus is asked for; the list takes it once it has rows. */
  focusRequest: number;
}

export function TargetList(props: ITargetListProps): JSX.Element {
  const { model, controller } = props;
  const containerRef = React.useRef<HTMLDivElement>(null);
  const [scrollTop, setScrollTop] = React.useState(0);
  const [viewport, setViewport] = React.useState(600);
  const pendingFocus = React.useRef<string | null>(null);
  const lastRevealed = React.useRef<string | null>(null);

  const items = React.useMemo<Item[]>(() => {
    const out: Item[] = [];
    for (const group of model.groups) {
      const collapsed = model.isCollapsed(group.family);
      out.push({
        type: 'group',
        family: group.family,
        count: group.targets.length,
        collapsed
      });
      if (collapsed) {
        continue;
      }
      if (group.targets.length === 0) {
        out.push({ type: 'empty', family: group.family, kinds: group.kinds });
      }
      for (const target of group.targets) {
        out.push({ type: 'target', target, family: group.family });
      }
    }
    return out;
    // The model is mutable: `version` says when it changed.
  }, [model, props.version]);

  const offsets = React.useMemo(() => {
    const list = new Array<number>(items.length + 1);
    list[0] = 0;
    for (let i = 0; i < items.length; i++) {
      list[i + 1] = list[i] + heightOf(items[i]);
    }
    return list;
  }, [items]);
  const total = offsets[items.length];

  React.useLayoutEffect(() => {
    const node = containerRef.current;
    if (!node) {
      return;
    }
    const measure = () => setViewport(node.clientHeight || 600);
    measure();
    if (typeof ResizeObserver === 'undefined') {
      return;
    }
    const observer = new ResizeObserver(measure);
    observer.observe(node);
    return () => observer.disconnect();
  }, []);

  const onScroll = React.useCallback(() => {
    const node = containerRef.current;
    if (node) {
      setScrollTop(node.scrollTop);
    }
  }, []);

  const indexOfKey = (key: string): number =>
    items.findIndex(item => keyOf(item) === key);

  const scrollIntoView = (index: number) => {
    const node = containerRef.current;
    if (!node || index < 0) {
      return;
    }
    const top = offsets[index];
    const bottom = offsets[index + 1];
    if (top < node.scrollTop) {
      node.scrollTop = top;
    } else if (bottom > node.scrollTop + node.clientHeight) {
      node.scrollTop = bottom - node.clientHeight;
    }
    setScrollTop(node.scrollTop);
  };

  // Reveal a target selected from elsewhere (a command, the create dialog).
  React.useEffect(() => {
    const selected = model.selected;
    if (!selected || selected === lastRevealed.current) {
      return;
    }
    const index = indexOfKey(`t:${selected}`);
    if (index >= 0) {
      lastRevealed.current = selected;
      scrollIntoView(index);
    }
  });

  // Move focus to a row that was just scrolled into the rendered range.
  React.useEffect(() => {
    const key = pendingFocus.current;
    if (!key || !containerRef.current) {
      return;
    }
    const el = containerRef.current.querySelector<HTMLElement>(
      `[data-key="${CSS.escape(key)}"]`
    );
    if (el) {
      pendingFocus.current = null;
      el.focus();
    }
  });

  const focusHandled = React.useRef(0);
  React.useEffect(() => {
    if (props.focusRequest <= focusHandled.current || !containerRef.current) {
      return;
    }
    const el =
      containerRef.current.querySelector<HTMLElement>('[tabindex="0"]');
    if (el) {
      focusHandled.current = props.focusRequest;
      el.focus();
    }
  });

  const focusIndex = (index: number) => {
    if (index < 0 || index >= items.length) {
      return;
    }
    const item = items[index];
    const key = keyOf(item);
    if (item.type === 'target') {
      lastRevealed.current = item.target.name;
      model.selected = item.target.name;
    }
    pendingFocus.current = key;
    scrollIntoView(index);
    const el = containerRef.current?.querySelector<HTMLElement>(
      `[data-key="${CSS.escape(key)}"]`
    );
    if (el) {
      pendingFocus.current = null;
      el.focus();
    }
  };

  const onKeyDown = (event: React.KeyboardEvent, index: number) => {
    if (event.target !== event.currentTarget) {
      return;
    }
    const item = items[index];
    const page = Math.max(1, Math.floor(viewport / ROW_HEIGHT) - 1);
    switch (event.key) {
      case 'ArrowDown':
        focusIndex(Math.min(items.length - 1, index + 1));
        break;
      case 'ArrowUp':
        focusIndex(Math.max(0, index - 1));
        break;
      case 'PageDown':
        focusIndex(Math.min(items.length - 1, index + page));
        break;
      case 'PageUp':
        focusIndex(Math.max(0, index - page));
        break;
      case 'Home':
        focusIndex(0);
        break;
      case 'End':
        focusIndex(items.length - 1);
        break;
      case 'ArrowLeft':
        if (item.type === 'group' && !item.collapsed) {
          model.setCollapsed(item.family, true);
        } else if (item.type !== 'group') {
          focusIndex(
            items.findIndex(i => i.type === 'group' && i.family === item.family)
          );
        }
        break;
      case 'ArrowRight':
        if (item.type === 'group' && item.collapsed) {
          model.setCollapsed(item.family, false);
        }
        break;
      case 'Enter':
      case ' ':
        if (item.type === 'group') {
          model.setCollapsed(item.family, !item.collapsed);
        } else if (item.type === 'target') {
          controller.openDetails(item.target.name);
        } else {
          void controller.create('create', item.kinds[0]?.name);
        }
        break;
      case 'Delete':
        if (
          item.type === 'target' &&
          controller.canRun(item.target.name, 'delete')
        ) {
          void controller.run(item.target.name, 'delete');
        }
        break;
      default:
        return;
    }
    event.preventDefault();
    event.stopPropagation();
  };

  // The rendered range: binary search for the first item below the top edge.
  const top = Math.max(0, scrollTop - OVERSCAN_PX);
  const bottom = scrollTop + viewport + OVERSCAN_PX;
  let lo = 0;
  let hi = items.length;
  while (lo < hi) {
    const mid = (lo + hi) >> 1;
    if (offsets[mid + 1] <= top) {
      lo = mid + 1;
    } else {
      hi = mid;
    }
  }
  const rendered: JSX.Element[] = [];
  const selected = model.selected;
  // One row is reachable with Tab: the selected one, else the first.
  const tabKey =
    selected && indexOfKey(`t:${selected}`) >= 0
      ? `t:${selected}`
      : items.length
        ? keyOf(items[0])
        : '';
  for (let i = lo; i < items.length && offsets[i] < bottom; i++) {
    const item = items[i];
    const key = keyOf(item);
    const style: React.CSSProperties = {
      position: 'absolute',
      top: offsets[i],
      height: heightOf(item),
      left: 0,
      right: 0
    };
    const common = {
      index: i,
      style,
      tabIndex: key === tabKey ? 0 : -1,
      onKeyDown
    };
    if (item.type === 'group') {
      rendered.push(
        <GroupHeader key={key} {...common} item={item} model={model} />
      );
    } else if (item.type === 'empty') {
      rendered.push(
        <EmptyGroup key={key} {...common} item={item} controller={controller} />
      );
    } else {
      rendered.push(
        <TargetRow
          key={key}
          {...common}
          target={item.target}
          kind={model.kindOf(item.target)}
          operation={model.operation(item.target.name)}
          busy={model.isBusy(item.target.name)}
          selected={selected === item.target.name}
          now={props.now}
          model={model}
          controller={controller}
        />
      );
    }
  }

  return (
    <div
      ref={containerRef}
      className="jp-ComputeList"
      onScroll={onScroll}
      role="list"
      aria-label="Compute targets"
    >
      <div className="jp-ComputeList-spacer" style={{ height: total }}>
        {rendered}
      </div>
    </div>
  );
}

interface IRowProps {
  index: number;
  style: React.CSSProperties;
  tabIndex: number;
  onKeyDown: (event: React.KeyboardEvent, index: number) => void;
}

function GroupHeader(
  props: IRowProps & {
    item: Extract<Item, { type: 'group' }>;
    model: ComputeModel;
  }
): JSX.Element {
  const { item, model } = props;
  const Caret = item.collapsed ? caretRightIcon : caretDownIcon;
  return (
    <div
      className="jp-ComputeGroup"
      role="listitem"
      style={props.style}
      data-family={item.family}
    >
      <div
        className="jp-ComputeGroup-toggle"
        role="button"
        aria-expanded={!item.collapsed}
        aria-label={`${item.family}, ${item.count} target${
          item.count === 1 ? '' : 's'
        }`}
        tabIndex={props.tabIndex}
        data-key={`group:${item.family}`}
        onClick={() => model.setCollapsed(item.family, !item.collapsed)}
        onKeyDown={event => props.onKeyDown(event, props.index)}
      >
        <Caret.react tag="span" elementSize="small" />
        <span className="jp-ComputeGroup-title">{item.family}</span>
        <span className="jp-ComputeGroup-count">{item.count}</span>
      </div>
    </div>
  );
}

function EmptyGroup(
  props: IRowProps & {
    item: Extract<Item, { type: 'empty' }>;
    controller: ComputeController;
  }
): JSX.Element {
  const { item, controller } = props;
  const creatable = item.kinds.find(
    k => k.managed && k.create_schema && k.operations.includes('create')
  );
  const attachable = item.kinds.find(
    k => !k.managed && k.operations.includes('attach')
  );
  return (
    <div
      className="jp-ComputeEmpty"
      role="listitem"
      style={props.style}
      tabIndex={props.tabIndex}
      data-key={`empty:${item.family}`}
      onKeyDown={event => props.onKeyDown(event, props.index)}
    >
      <span>No targets.</span>
      {creatable ? (
        <button
          type="button"
          className="jp-ComputeLink"
          tabIndex={-1}
          onClick={() => void controller.create('create', creatable.name)}
        >
          Create one
        </button>
      ) : attachable ? (
        <button
          type="button"
          className="jp-ComputeLink"
          tabIndex={-1}
          onClick={() => void controller.create('attach', attachable.name)}
        >
          Attach one
        </button>
      ) : null}
    </div>
  );
}

const TargetRow = React.memo(function TargetRow(
  props: IRowProps & {
    target: ITarget;
    kind: IKind | undefined;
    operation: ITargetOperation | undefined;
    busy: boolean;
    selected: boolean;
    now: number;
    model: ComputeModel;
    controller: ComputeController;
  }
): JSX.Element {
  const { target, kind, operation, controller, model } = props;
  const transitional = isTransitional(target.state) || !!operation;
  const size = formatSize(target);
  const isCluster = kind?.family === CLUSTERS_FAMILY;
  const address = target.kind === SSH_KIND ? sshAddress(target) : '';
  // An SSH machine is one node: its address says more than "1/1 node".
  const nodes = isCluster
    ? formatWorkers(target)
    : address
      ? ''
      : formatNodes(target);
  const idle = formatIdleShutdown(target, props.now);
  // This machine is always running: how busy it is says more than its state.
  const load = target.kind === 'local' ? formatLoad(target) : '';
  const scalable =
    scaleFields(kind).length > 0 &&
    target.state !== 'deleting' &&
    target.state !== 'creating';
  const progress =
    operation?.progress || (transitional ? `${target.state}…` : '');
  const lastError =
    target.state === 'failed' && target.errors.length
      ? target.errors[target.errors.length - 1].message
      : '';
  // A stopped target that did not stop at someone's asking says why (idle shutdown, a limit).
  const stoppedWhy =
    target.state === 'stopped'
      ? target.errors.length
        ? target.errors[target.errors.length - 1].message
        : target.provider_state &&
            target.provider_state.toLowerCase() !== 'stopped'
          ? target.provider_state
          : ''
      : '';
  // A cluster's workers come first: they are what changes.
  const meta = [
    kind ? '' : target.kind,
    address,
    stoppedWhy ? `stopped: ${stoppedWhy}` : '',
    ...(isCluster ? [nodes, size] : [size, nodes]),
    load,
    idle
  ].filter(Boolean);
  const description = [target.name, target.state, ...meta, progress, lastError]
    .filter(Boolean)
    .join(', ');
  return (
    <div
      className={`jp-ComputeRow${props.selected ? ' jp-mod-selected' : ''}`}
      role="listitem"
      style={props.style}
      aria-label={description}
      aria-current={props.selected ? 'true' : undefined}
      tabIndex={props.tabIndex}
      data-key={`t:${target.name}`}
      data-name={target.name}
      data-state={target.state}
      onClick={() => {
        model.selected = target.name;
      }}
      onDoubleClick={() => controller.openDetails(target.name)}
      onFocus={event => {
        if (event.target === event.currentTarget) {
          model.selected = target.name;
        }
      }}
      onKeyDown={event => props.onKeyDown(event, props.index)}
    >
      <div className="jp-ComputeRow-main">
        <StateBadge state={target.state} />
        <span className="jp-ComputeRow-name" title={target.name}>
          {target.name}
        </span>
        <ApplicationLinks
          target={target}
          tabIndex={props.selected ? 0 : -1}
          openInTab={(url, label) => controller.openInTab(url, label)}
        />
      </div>
      <div className="jp-ComputeRow-second">
        <div className="jp-ComputeRow-meta">
          {transitional ? (
            <span className="jp-ComputeRow-progress" title={progress}>
              <span
                className="jp-ComputeRow-progressBar"
                role="progressbar"
                aria-label={`${target.name}: ${progress}`}
              />
              {progress}
            </span>
          ) : lastError ? (
            <span className="jp-ComputeRow-error" title={lastError}>
              {lastError}
            </span>
          ) : (
            meta.map((m, i) => (
              <span
                key={i}
                className={`jp-ComputeRow-fact${
                  m === idle ? ' jp-mod-idle' : ''
                }`}
                title={m}
              >
                {m}
              </span>
            ))
          )}
        </div>
        <span className="jp-ComputeRow-actions">
          {scalable ? (
            <button
              type="button"
              className="jp-ComputeAction jp-mod-scale"
              data-action="scale"
              aria-label={`Scale ${target.name}`}
              title="Scale: min and max nodes"
              disabled={props.busy || !!operation}
              tabIndex={props.selected ? 0 : -1}
              onClick={event => {
                event.stopPropagation();
                void showScaleDialog(model, target.name);
              }}
            >
              <settingsIcon.react tag="span" elementSize="small" />
            </button>
          ) : null}
          <ActionButtons
            target={target}
            kind={kind}
            controller={controller}
            busy={props.busy || !!operation}
            tabIndex={props.selected ? 0 : -1}
          />
          <button
            type="button"
            className="jp-ComputeAction jp-mod-details"
            data-action="details"
            aria-label={`Details of ${target.name}`}
            title="Details"
            tabIndex={props.selected ? 0 : -1}
            onClick={event => {
              event.stopPropagation();
              controller.openDetails(target.name);
            }}
          >
            <infoIcon.react tag="span" elementSize="small" />
          </button>
        </span>
      </div>
    </div>
  );
});
