/** Paints an inpainting mask over the input picture: brush with its outline, eraser, undo, clear; exported at the picture's size. */
import { useEffect, useRef, useState, type PointerEvent } from "react";
import { stripDataUrl } from "@sd-worker/sdk";
import {
  OVERLAY_RGB,
  maskToOverlay,
  overlayToMask,
  pictureUrl,
  previewWidth,
  toPicturePoint,
  type MaskPicture,
  type Picture,
} from "../images";

/** Props of {@link MaskEditor}. */
export interface MaskEditorProps {
  /** The picture to paint over; the canvas has its exact pixel size. */
  image: Picture;
  /** The current mask: shown over the picture (an uploaded one too). */
  mask: MaskPicture | null;
  /** Told the painted mask after each stroke (null once nothing is painted). */
  onChange: (mask: MaskPicture | null) => void;
  /** Marks the canvas (the worker blamed the mask). */
  invalid?: boolean;
  disabled?: boolean;
}

/** Brush sizes, in screen pixels. */
const BRUSH_MIN = 4;
const BRUSH_MAX = 96;
/** Most strokes Undo can take back. */
const UNDO_DEPTH = 30;

type Point = { x: number; y: number };

/** Draws a picture into a fresh canvas of the given size and returns its pixels, or null without a 2D canvas. */
async function picturePixels(picture: Picture, width: number, height: number): Promise<Uint8ClampedArray | null> {
  const img = new Image();
  img.src = pictureUrl(picture);
  await img.decode();
  const canvas = document.createElement("canvas");
  canvas.width = width;
  canvas.height = height;
  const ctx = canvas.getContext("2d");
  if (!ctx) return null;
  ctx.drawImage(img, 0, 0, width, height);
  return ctx.getImageData(0, 0, width, height).data;
}

/**
 * The picture with a canvas over it. Strokes show in translucent white; after
 * each one the overlay is exported as a black-and-white PNG of the
 * picture's exact size (white = repaint). A mask given from outside (an
 * uploaded file) is drawn onto the canvas, scaled to the picture, so
 * painting continues from it. Undo (or Ctrl+Z) takes back the last stroke.
 */
export function MaskEditor({ image, mask, onChange, invalid, disabled }: MaskEditorProps) {
  const canvasRef = useRef<HTMLCanvasElement>(null);
  const [brush, setBrush] = useState(32);
  const [erase, setErase] = useState(false);
  const [outline, setOutline] = useState<Point | null>(null);
  const [undoDepth, setUndoDepth] = useState(0);
  const undoStack = useRef<ImageData[]>([]);
  const last = useRef<Point | null>(null);
  // The base64 of the mask this editor exported last: no need to draw it back.
  const exported = useRef<string | null>(null);

  useEffect(() => {
    const canvas = canvasRef.current;
    const ctx = canvas?.getContext("2d");
    if (!canvas || !ctx) return undefined;
    if (!mask) {
      ctx.clearRect(0, 0, canvas.width, canvas.height);
      exported.current = null;
      return undefined;
    }
    if (mask.base64 === exported.current) return undefined;
    let cancelled = false;
    picturePixels(mask, canvas.width, canvas.height)
      .then((pixels) => {
        if (cancelled || !pixels) return;
        const overlay = ctx.createImageData(canvas.width, canvas.height);
        overlay.data.set(maskToOverlay(pixels));
        ctx.putImageData(overlay, 0, 0);
      })
      .catch(() => undefined);
    return () => {
      cancelled = true;
    };
  }, [mask, image.width, image.height]);

  const context = () => canvasRef.current?.getContext("2d") ?? null;

  const pointOf = (event: PointerEvent<HTMLCanvasElement>) => {
    const canvas = event.currentTarget;
    const rect = canvas.getBoundingClientRect();
    const point = toPicturePoint(event.clientX, event.clientY, rect, canvas.width, canvas.height);
    const scale = rect.width > 0 ? canvas.width / rect.width : 1;
    return { point, radius: Math.max(0.5, (brush * scale) / 2) };
  };

  const paint = (ctx: CanvasRenderingContext2D, from: Point, to: Point, radius: number) => {
    ctx.save();
    ctx.globalCompositeOperation = erase ? "destination-out" : "source-over";
    const colour = `rgb(${OVERLAY_RGB.join(", ")})`;
    ctx.strokeStyle = colour;
    ctx.fillStyle = colour;
    ctx.lineCap = "round";
    ctx.lineJoin = "round";
    ctx.lineWidth = radius * 2;
    ctx.beginPath();
    if (from.x === to.x && from.y === to.y) {
      ctx.arc(to.x, to.y, radius, 0, Math.PI * 2);
      ctx.fill();
    } else {
      ctx.moveTo(from.x, from.y);
      ctx.lineTo(to.x, to.y);
      ctx.stroke();
    }
    ctx.restore();
  };

  const exportMask = () => {
    const canvas = canvasRef.current;
    const ctx = context();
    if (!canvas || !ctx) return;
    const { width, height } = canvas;
    const { pixels, painted } = overlayToMask(ctx.getImageData(0, 0, width, height).data);
    if (painted === 0) {
      exported.current = null;
      onChange(null);
      return;
    }
    const out = document.createElement("canvas");
    out.width = width;
    out.height = height;
    const octx = out.getContext("2d");
    if (!octx) return;
    const data = octx.createImageData(width, height);
    data.data.set(pixels);
    octx.putImageData(data, 0, 0);
    const base64 = stripDataUrl(out.toDataURL("image/png"));
    exported.current = base64;
    onChange({
      base64,
      mime: "image/png",
      width,
      height,
      name: "painted mask",
      bytes: Math.floor((base64.length * 3) / 4),
      painted: true,
    });
  };

  const onPointerDown = (event: PointerEvent<HTMLCanvasElement>) => {
    const ctx = context();
    if (disabled || !ctx || event.button > 0) return;
    event.preventDefault();
    event.currentTarget.setPointerCapture?.(event.pointerId);
    const { point, radius } = pointOf(event);
    const canvas = event.currentTarget;
    undoStack.current = [...undoStack.current, ctx.getImageData(0, 0, canvas.width, canvas.height)].slice(-UNDO_DEPTH);
    setUndoDepth(undoStack.current.length);
    last.current = point;
    paint(ctx, point, point, radius);
  };
  const onPointerMove = (event: PointerEvent<HTMLCanvasElement>) => {
    const rect = event.currentTarget.getBoundingClientRect();
    setOutline({ x: event.clientX - rect.left, y: event.clientY - rect.top });
    const ctx = context();
    if (!last.current || !ctx) return;
    const { point, radius } = pointOf(event);
    paint(ctx, last.current, point, radius);
    last.current = point;
  };
  const onPointerEnd = () => {
    if (!last.current) return;
    last.current = null;
    exportMask();
  };
  const undo = () => {
    const ctx = context();
    const previous = undoStack.current.at(-1);
    if (!ctx || !previous) return;
    undoStack.current = undoStack.current.slice(0, -1);
    setUndoDepth(undoStack.current.length);
    ctx.putImageData(previous, 0, 0);
    exportMask();
  };
  const clear = () => {
    const canvas = canvasRef.current;
    if (canvas && context()) {
      undoStack.current = [...undoStack.current, context()!.getImageData(0, 0, canvas.width, canvas.height)].slice(-UNDO_DEPTH);
      setUndoDepth(undoStack.current.length);
    }
    context()?.clearRect(0, 0, canvas?.width ?? 0, canvas?.height ?? 0);
    exported.current = null;
    onChange(null);
  };

  return (
    <div
      className="mask-editor"
      onKeyDown={(event) => {
        if ((event.ctrlKey || event.metaKey) && event.key.toLowerCase() === "z") {
          event.preventDefault();
          undo();
        }
      }}
    >
      <div className="mask-stage" style={{ width: previewWidth(image) }} onPointerLeave={() => setOutline(null)}>
        <img src={pictureUrl(image)} alt={`Input image: ${image.name}`} width={image.width} height={image.height} draggable={false} />
        <canvas
          ref={canvasRef}
          width={image.width}
          height={image.height}
          className={erase ? "mask-canvas erasing" : "mask-canvas"}
          role="img"
          aria-label="Mask: paint over the part to repaint"
          aria-invalid={invalid || undefined}
          data-testid="mask-canvas"
          onPointerDown={onPointerDown}
          onPointerMove={onPointerMove}
          onPointerUp={onPointerEnd}
          onPointerCancel={onPointerEnd}
          onLostPointerCapture={onPointerEnd}
        />
        {outline && !disabled && (
          <div
            className={erase ? "brush-outline erasing" : "brush-outline"}
            data-testid="brush-outline"
            aria-hidden="true"
            style={{ left: outline.x - brush / 2, top: outline.y - brush / 2, width: brush, height: brush }}
          />
        )}
      </div>
      <div className="mask-tools">
        <label htmlFor="brush-size">
          Brush <output htmlFor="brush-size">{brush} px</output>
        </label>
        <input
          id="brush-size"
          type="range"
          min={BRUSH_MIN}
          max={BRUSH_MAX}
          step={2}
          value={brush}
          disabled={disabled}
          onChange={(e) => setBrush(Number(e.target.value))}
        />
        <label className="check">
          <input type="checkbox" checked={erase} disabled={disabled} onChange={(e) => setErase(e.target.checked)} /> Erase
        </label>
        <button type="button" onClick={undo} disabled={disabled || undoDepth === 0} title="Ctrl+Z">
          Undo
        </button>
        <button type="button" onClick={clear} disabled={disabled || !mask}>
          Clear mask
        </button>
      </div>
    </div>
  );
}
