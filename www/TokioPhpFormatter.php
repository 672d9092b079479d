<?php
/*
 * A Monolog formatter that writes tokio_php's JSON log shape, one line per record:
 *
 *   {"ts":"2026-11-29T21:08:52.822Z","level":"warn","type":"php","msg":"…",
 *    "ctx":{"service":"tokio_php","request_id":"…","trace_id":"…","span_id":"…"},
 *    "data":{"channel":"app", …the record's context…, "extra":{…}}}
 *
 * so an application's own log lines sit beside the server's (same fields, same request and
 * trace ids) in whatever collects them. With Monolog 2 or 3:
 *
 *   require __DIR__ . '/TokioPhpFormatter.php';
 *   $handler = new Monolog\Handler\StreamHandler('php://stderr');
 *   $handler->setFormatter(new TokioPhp\Log\TokioPhpFormatter());
 *   $log = new Monolog\Logger('app', [$handler]);
 *   $log->warning('Payment declined', ['order' => 42]);
 *
 * Levels map onto the server's: DEBUG → debug, INFO and NOTICE → info, WARNING → warn, ERROR
 * and above → error. Throwables in the context become {class, message, code, file}. The ids come
 * from the request (tokio_request_id(), $_SERVER['TRACE_ID'] / ['SPAN_ID']); outside a request
 * they are left out.
 */

namespace TokioPhp\Log;

abstract class TokioPhpFormatterBase
{
    private string $type;
    private string $service;

    /** @param string $type the line's "type" (the server's own lines are "app", "access", "error") */
    public function __construct(string $type = 'php', ?string $service = null)
    {
        $this->type = $type;
        $this->service = $service ?? (getenv('OTEL_SERVICE_NAME') ?: 'tokio_php');
    }

    /** @param array|object $record a Monolog 2 record (array) or a Monolog 3 LogRecord */
    public function format($record): string
    {
        $record = is_object($record) && method_exists($record, 'toArray') ? $record->toArray() : (array) $record;
        $data = ['channel' => (string) ($record['channel'] ?? '')];
        foreach ((array) ($record['context'] ?? []) as $key => $value) {
            $data[$key] = self::normalize($value);
        }
        if (!empty($record['extra'])) {
            $data['extra'] = self::normalize($record['extra']);
        }
        $line = [
            'ts' => self::timestamp($record['datetime'] ?? null),
            'level' => self::level((int) ($record['level'] ?? 200)),
            'type' => $this->type,
            'msg' => (string) ($record['message'] ?? ''),
            'ctx' => $this->context(),
            'data' => $data,
        ];
        return json_encode($line, JSON_UNESCAPED_SLASHES | JSON_UNESCAPED_UNICODE | JSON_INVALID_UTF8_SUBSTITUTE | JSON_PARTIAL_OUTPUT_ON_ERROR) . "\n";
    }

    /** @param array<array|object> $records */
    public function formatBatch(array $records): string
    {
        return implode('', array_map(fn ($record) => $this->format($record), $records));
    }

    /** The server's ctx: service, then the request's ids when there is a request. */
    private function context(): array
    {
        $context = ['service' => $this->service];
        $requestId = function_exists('tokio_request_id') ? tokio_request_id() : '';
        if ($requestId !== '') {
            $context['request_id'] = $requestId;
        }
        foreach (['TRACE_ID' => 'trace_id', 'SPAN_ID' => 'span_id'] as $var => $key) {
            if (!empty($_SERVER[$var])) {
                $context[$key] = $_SERVER[$var];
            }
        }
        return $context;
    }

    /** Monolog's numeric levels (RFC 5424 scaled: 100 DEBUG … 600 EMERGENCY). */
    private static function level(int $level): string
    {
        return match (true) {
            $level < 200 => 'debug',
            $level < 300 => 'info',
            $level < 400 => 'warn',
            default => 'error',
        };
    }

    /** RFC 3339 in UTC with milliseconds, as the server writes it. */
    private static function timestamp($datetime): string
    {
        $time = $datetime instanceof \DateTimeInterface
            ? \DateTimeImmutable::createFromInterface($datetime)
            : new \DateTimeImmutable();
        return $time->setTimezone(new \DateTimeZone('UTC'))->format('Y-m-d\TH:i:s.v\Z');
    }

    private static function normalize($value, int $depth = 0)
    {
        if ($depth > 8) {
            return '…';
        }
        if ($value instanceof \Throwable) {
            return [
                'class' => get_class($value),
                'message' => $value->getMessage(),
                'code' => $value->getCode(),
                'file' => $value->getFile() . ':' . $value->getLine(),
            ];
        }
        if ($value instanceof \DateTimeInterface) {
            return self::timestamp($value);
        }
        if ($value instanceof \JsonSerializable) {
            return self::normalize($value->jsonSerialize(), $depth + 1);
        }
        if (is_object($value)) {
            return method_exists($value, '__toString') ? (string) $value : ['class' => get_class($value)];
        }
        if (is_array($value)) {
            return array_map(fn ($item) => self::normalize($item, $depth + 1), $value);
        }
        if (is_resource($value)) {
            return get_resource_type($value) . ' resource';
        }
        return $value;
    }
}

// Implements Monolog's FormatterInterface where Monolog is installed; format()'s untyped parameter
// accepts both Monolog 2's array and Monolog 3's LogRecord.
if (interface_exists(\Monolog\Formatter\FormatterInterface::class)) {
    final class TokioPhpFormatter extends TokioPhpFormatterBase implements \Monolog\Formatter\FormatterInterface
    {
    }
} else {
    final class TokioPhpFormatter extends TokioPhpFormatterBase
    {
    }
}
